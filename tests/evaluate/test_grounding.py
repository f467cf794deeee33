"""Grounding: lesion patches on the crop grid, oracle = 1.0, random ≈ chance, heat maps, the whole task."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.image import imread

from simcrop.evaluate.grounding import (evaluate_grounding, grounding_scores, heatmap_for_text, lesion_patches,
                                        summarize)
from simcrop.evaluate.heatmap import heatmap_figure, pick_slices, upsample
from simcrop.evaluate.embed import NotApplicableError, load_model
from simcrop_kernels import topk_similarity


def test_lesion_patches_follow_the_vit_token_order():
    mask = torch.zeros(16, 24, 8, dtype=torch.long)            # grid (2, 3, 2) of 8 x 8 x 4 patches
    mask[9, 17, 5] = 3                                          # one voxel in patch (1, 2, 1)
    mask[0, 0, 0] = 7                                           # another lesion in patch (0, 0, 0)
    hit = lesion_patches(mask, [3], (8, 8, 4))
    assert hit.shape == (12,) and hit.nonzero().flatten().tolist() == [1 * 6 + 2 * 2 + 1]
    assert lesion_patches(mask, [3, 7], (8, 8, 4)).sum() == 2
    with pytest.raises(ValueError, match="multiple"):
        lesion_patches(mask[:15], [3], (8, 8, 4))


def test_scores_on_a_hand_made_case():
    lesion = torch.zeros(2, 10, dtype=torch.bool)
    lesion[0, [2, 3]] = True
    lesion[1, [0, 1, 2, 3, 4]] = True
    indices = torch.tensor([[3, 9, 2], [7, 0, 1]])
    per = grounding_scores(indices, lesion)
    assert per["hit"].tolist() == pytest.approx([2 / 3, 2 / 3])
    assert per["pointing"].tolist() == [1.0, 0.0]
    assert per["chance"].tolist() == pytest.approx([0.2, 0.5])
    assert per["oracle"].tolist() == pytest.approx([2 / 3, 1.0])
    summary = summarize(per)
    assert summary["hit_ratio_to_chance"] == pytest.approx((2 / 3) / 0.35)


def test_oracle_sentence_scores_exactly_one():
    """Distinct (orthonormal) patch features; each sentence is the mean of its lesion patches' features,
    so its top-K (K ≤ lesion size) are lesion patches: hit fraction and pointing game are exactly 1."""
    g = torch.Generator().manual_seed(0)
    V, N, k = 5, 48, 4
    patches = torch.stack([torch.linalg.qr(torch.randn(N, N, generator=g))[0] for _ in range(V)])  # (V, N, N)
    lesion = torch.zeros(3 * V, N, dtype=torch.bool)
    s2v = torch.arange(V).repeat_interleave(3)
    for s in range(3 * V):
        size = int(torch.randint(k, 12, (1,), generator=g))
        lesion[s, torch.randperm(N, generator=g)[:size]] = True
    sentences = F.normalize(torch.stack([patches[s2v[s]][lesion[s]].mean(0) for s in range(3 * V)]), dim=-1)
    res = topk_similarity(sentences, patches, k, mode="own", sentence_to_volume=s2v)
    summary = summarize(grounding_scores(res.indices, lesion))
    assert summary["hit_fraction"] == 1.0 and summary["pointing_game"] == 1.0
    assert summary["hit_fraction_oracle"] == 1.0 and summary["hit_ratio_to_chance"] > 4


def test_random_features_score_chance():
    g = torch.Generator().manual_seed(1)
    V, N, D, k, per_volume = 40, 64, 16, 6, 50
    patches = F.normalize(torch.randn(V, N, D, generator=g), dim=-1)
    s2v = torch.arange(V).repeat_interleave(per_volume)
    sentences = F.normalize(torch.randn(len(s2v), D, generator=g), dim=-1)
    sizes = torch.randint(2, 20, (len(s2v),), generator=g)
    lesion = torch.rand(len(s2v), N, generator=g).argsort(1) < sizes[:, None]
    res = topk_similarity(sentences, patches, k, mode="own", sentence_to_volume=s2v)
    summary = summarize(grounding_scores(res.indices, lesion))
    # 2000 sentences: standard errors ≈ 0.004 (hit fraction) and 0.007 (pointing)
    assert summary["hit_fraction"] == pytest.approx(summary["hit_fraction_chance"], abs=0.02)
    assert summary["pointing_game"] == pytest.approx(summary["pointing_chance"], abs=0.03)
    assert summary["hit_ratio_to_chance"] == pytest.approx(1.0, abs=0.15)


def test_heatmap_figure_and_slices(tmp_path):
    volume = np.random.default_rng(0).uniform(-1, 1, (32, 32, 16))
    sims = np.zeros((4, 4, 4))
    sims[1, 2, 3] = 1.0
    lesion = np.zeros((32, 32, 16), dtype=bool)
    lesion[8:16, 16:24, 5:7] = True
    assert upsample(sims, volume.shape)[8:16, 16:24, 12:16].min() == 1.0
    assert pick_slices(sims, lesion, 3, 4) == [2, 5, 14]     # lesion slice, best layer, then layer 0 (tie)
    png = heatmap_figure(volume, "A nodule. " * 30, sims, tmp_path / "f" / "h.png", lesion, "case",
                         top_patches=[1 * 16 + 2 * 4 + 3])
    assert imread(png).shape[2] in (3, 4) and not list(tmp_path.glob("f/.*tmp*"))


def test_evaluate_grounding_on_a_tiny_run(checkpoints, tiny_run, tmp_path, text_encoder):
    out = tmp_path / "grounding.json"
    metrics = evaluate_grounding(None, checkpoints["simcrop"], tiny_run, out, n_figures=2, cache_dir=False,
                                 progress=False, text_encoder=text_encoder)
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(metrics))
    # t0_a_1, t0_a_2 (same scan) and t1_a_1 each have one lesion sentence, 12 of 64 patches each
    assert saved["applicable"] and saved["n_sentences"] == 3 and saved["n_volumes"] == 3
    assert saved["skipped_sentences"] == {"no_mask_file": 0, "lesion_outside_crop": 0, "truncated": 0}
    assert saved["lesion_patches_mean"] == 12 and saved["hit_fraction_chance"] == pytest.approx(12 / 64)
    assert saved["hit_fraction_oracle"] == 1.0 and 0.0 <= saved["hit_fraction"] <= 1.0
    assert len(saved["figures"]) == 2 and all(imread(p).ndim == 3 for p in saved["figures"])   # one per scan
    # no anatomy maps in this run: the location prior falls back to random patches, and says so
    assert saved["location_prior"]["fallbacks"] == {"region": 0, "no_location_word": 0, "random": 3}
    with pytest.raises(NotApplicableError, match="patch features"):
        evaluate_grounding(None, checkpoints["clip"], tiny_run, out, progress=False, text_encoder=text_encoder)


def test_real_data_gets_heat_maps_and_no_scores(checkpoints, tmp_path, text_encoder, tiny_run_factory):
    run = tiny_run_factory(tmp_path / "real", masks=False)
    shutil.rmtree(run / "preprocessed" / "masks")
    metrics = evaluate_grounding(None, checkpoints["simcrop"], run, tmp_path / "g.json", n_figures=2,
                                 cache_dir=False, progress=False, text_encoder=text_encoder)
    assert metrics["applicable"] is False and metrics["n_sentences"] == 0 and len(metrics["figures"]) == 2
    model, _ = load_model(checkpoints["simcrop"], text_encoder=text_encoder)
    png = heatmap_for_text(model, run / "preprocessed" / "volumes" / "t2_a_1.nii.gz", "The heart is enlarged.",
                           tmp_path / "any.png")
    assert imread(png).ndim == 3


def _with_anatomy_maps(run):
    """Organ maps beside the lesion masks: right lung x 2-17, left lung x 18-33 (RAS labels 1 and 2)."""
    import nibabel as nib
    from simcrop.evaluate.controls import ORGAN_LABELS
    for vol in (run / "preprocessed" / "volumes").glob("*.nii.gz"):
        img = nib.load(vol)
        organs = np.zeros(img.shape, np.uint8)
        organs[2:18, 4:32, 1:17] = ORGAN_LABELS["right_lung"]
        organs[18:34, 4:32, 1:17] = ORGAN_LABELS["left_lung"]
        nib.save(nib.Nifti1Image(organs, img.affine), run / "preprocessed" / "masks" / vol.name.replace(
            ".nii.gz", ".organ.nii.gz"))
    return run


def test_grounding_json_carries_controls_and_intervals(checkpoints, tmp_path, text_encoder, tiny_run_factory):
    from simcrop.evaluate.grounding import INTERVAL_KEYS, bootstrap_grounding
    run = _with_anatomy_maps(tiny_run_factory(tmp_path / "anatomy"))
    out = tmp_path / "grounding.json"
    evaluate_grounding(None, checkpoints["simcrop"], run, out, n_figures=0, cache_dir=False, progress=False,
                       text_encoder=text_encoder, n_boot=200)
    saved = json.loads(out.read_text())
    per = saved["per_sentence"]
    assert per["patient_id"] == ["t0", "t0", "t1"] and per["volume_id"] == ["t0_a_1", "t0_a_2", "t1_a_1"]
    assert np.mean(per["model"]["hit"]) == pytest.approx(saved["hit_fraction"])
    assert np.mean(per["chance"]) == pytest.approx(saved["hit_fraction_chance"])
    for name in ("location_prior", "content_shuffled"):
        control = saved[name]
        assert control["hit_fraction"] == pytest.approx(np.mean(per[name]["hit"]))
        assert control["pointing_game"] == pytest.approx(np.mean(per[name]["pointing"]))
        assert control["hit_ratio_to_chance"] == pytest.approx(control["hit_fraction"] / saved["hit_fraction_chance"])
        for key, ci in control["intervals"].items():
            assert ci["lo"] <= ci["value"] <= ci["hi"], (name, key)
    # the prior: right upper lobe (t0) and left lower lobe (t1) read off the anatomy maps, all inside the lungs
    assert saved["location_prior"]["fallbacks"] == {"region": 3, "no_location_word": 0, "random": 0}
    assert saved["location_prior"]["anatomy_maps"] == 3
    # content shuffled between the two patients: t0's volumes take t1's features and back
    donor = saved["content_shuffled"]["donor"]
    assert donor["t1_a_1"] in ("t0_a_1", "t0_a_2") and donor["t0_a_1"] == donor["t0_a_2"] == "t1_a_1"
    assert set(saved["intervals"]) == set(INTERVAL_KEYS)
    for key in INTERVAL_KEYS:
        ci = saved["intervals"][key]
        assert ci["value"] == pytest.approx(saved[key]) and ci["lo"] <= ci["value"] <= ci["hi"]
    assert saved["bootstrap"]["n_patients"] == 2 and saved["bootstrap"]["n_boot"] == 200
    diff = saved["differences"]["model_minus_location_prior"]["hit_fraction"]
    assert diff["value"] == pytest.approx(saved["hit_fraction"] - saved["location_prior"]["hit_fraction"])
    assert set(saved["differences"]) == {"model_minus_location_prior", "model_minus_content_shuffled"}
    # the report can redo the bootstrap from the per-sentence record alone
    again = bootstrap_grounding(per, n_boot=200, seed=0)
    assert again["intervals"]["hit_fraction"] == pytest.approx(saved["intervals"]["hit_fraction"])
