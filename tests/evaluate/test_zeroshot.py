"""Zero-shot: prompts, scores on constructed features, and the whole task on a tiny run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from simcrop.evaluate.metrics import auroc
from simcrop.evaluate.zeroshot import evaluate_zeroshot, label_matrix, prompts, zeroshot_scores


def test_prompts_from_templates():
    pos, neg = prompts(["Emphysema", "Lung nodule"])
    assert pos == ["Emphysema is present.", "Lung nodule is present."]
    assert neg == ["Emphysema is not present.", "Lung nodule is not present."]
    pos, _ = prompts(["Emphysema"], "There is {label}.", "No {label}.")
    assert pos == ["There is Emphysema."]
    with pytest.raises(ValueError, match="label"):
        prompts(["x"], "no placeholder", "{label}")


def test_auroc_is_one_when_positive_prompts_align_with_positive_volumes():
    """Label c: positive prompt e_c, negative prompt e_{c+3}. A volume positive for c holds a patch
    close to e_c, a negative one a patch close to e_{c+3}; the other patches are noise on other axes."""
    g = torch.Generator().manual_seed(0)
    n_labels, V, N, D = 3, 12, 6, 16
    eye = torch.eye(D)
    y = torch.randint(0, 2, (V, n_labels), generator=g)
    y[0], y[1] = 1, 0                                          # every label has both values
    patches = torch.randn(V, N, D, generator=g) * 0.05
    patches[:, :, : 2 * n_labels] = 0
    for v in range(V):
        for c in range(n_labels):
            axis = c if y[v, c] else c + n_labels
            patches[v, c, axis] = 1.0 + 0.1 * torch.rand(1, generator=g).item()
    patches = F.normalize(patches, dim=-1)
    scores = zeroshot_scores(eye[:n_labels], eye[n_labels: 2 * n_labels], patches, k=2)
    assert scores.shape == (V, n_labels)
    out = auroc(y.numpy(), scores.numpy(), ["a", "b", "c"])
    assert out["mean"] == 1.0 and all(v == 1.0 for v in out["per_class"].values())
    # the pairwise softmax at any temperature ranks the same way
    softmax = torch.sigmoid(scores / 0.07)
    assert auroc(y.numpy(), softmax.numpy())["mean"] == 1.0


def test_label_matrix_missing_labels_count_as_absent():
    y, names = label_matrix([{"labels": {"b": 1}}, {"labels": {"a": 1, "b": 0}}])
    assert names == ["a", "b"] and y.tolist() == [[0, 1], [1, 0]]


def test_evaluate_zeroshot_on_a_tiny_run(checkpoints, tiny_run, tmp_path, text_encoder):
    out = tmp_path / "zeroshot.json"
    metrics = evaluate_zeroshot(None, checkpoints["simcrop"], tiny_run, out, cache_dir=tmp_path / "cache",
                                progress=False, text_encoder=text_encoder)
    saved = json.loads(out.read_text())
    assert saved["task"] == "zeroshot" and saved["applicable"] is True and saved["n_volumes"] == 4
    assert saved["excluded_labels"] == ["Cardiomegaly"] and saved["auroc"]["Cardiomegaly"] is None
    assert saved["n_labels"] == 2 and 0.0 <= saved["mean_auroc"] <= 1.0
    assert saved["mean_auroc"] == pytest.approx(np.mean([saved["auroc"]["Emphysema"],
                                                         saved["auroc"]["Lung nodule"]]))
    assert metrics["k"] == 4 and metrics["patches_per_volume"] == 64
    # the CLIP baseline: one global feature per volume, K = 1
    clip = evaluate_zeroshot(None, checkpoints["clip"], tiny_run, tmp_path / "clip.json", cache_dir=False,
                             progress=False, text_encoder=text_encoder)
    assert clip["feature_kind"] == "global" and clip["k"] == 1 and clip["n_labels"] == 2
