"""Segmentation: label remapping, positive/negative crops, and UNETR learning a bright sphere (class 1)
well beyond chance in a few dozen steps, with Dice reported per class without background."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from simcrop.config import from_dict
from simcrop.data.manifest import empty_row, write_manifest
from simcrop.evaluate.segment import (crop_sampler, evaluate_segmentation, mask_kind, remap_labels, segment_dice,
                                    segmentation_cases)

TINY = {"embed_dim": 48, "depth": 2, "num_heads": 3}


def write_sphere_run(root: Path, n_patients: int = 10, shape=(40, 40, 20), seed: int = 0) -> Path:
    """Noisy lung-like volumes with one bright sphere (organ label 1, right lung) and a bright box that
    is bone (label 6, not a requested class); splits 6 / 2 / 2 patients."""
    rng = np.random.default_rng(seed)
    pre = root / "preprocessed"
    (pre / "volumes").mkdir(parents=True)
    (pre / "masks").mkdir()
    grid = np.stack(np.meshgrid(*[np.arange(d) for d in shape], indexing="ij"))
    rows = []
    for p in range(n_patients):
        vid = f"p{p}"
        hu = rng.normal(-750, 80, shape)
        organ = np.zeros(shape, dtype=np.uint8)
        centre = rng.uniform([12, 12, 6], [28, 28, 14])
        r = np.sqrt((((grid.T - centre) / [1, 1, 0.5]) ** 2).sum(-1)).T
        organ[r < 6] = 1
        organ[:4, :, :] = 6
        hu[organ == 1] = rng.normal(300, 80, int((organ == 1).sum()))
        hu[organ == 6] = 200
        affine = np.diag([3.0, 3.0, 6.0, 1.0])
        volume = np.clip(hu, -1000, 1000).astype(np.int16)
        nib.save(nib.Nifti1Image(volume, affine), pre / "volumes" / f"{vid}.nii.gz")
        nib.save(nib.Nifti1Image(organ, affine), pre / "masks" / f"{vid}.organ.nii.gz")
        nib.save(nib.Nifti1Image((organ == 1).astype(np.uint8) * 3, affine), pre / "masks" / f"{vid}.lesion.nii.gz")
        row = empty_row()
        row.update(volume_id=vid, patient_id=f"pat{p}", scan_id=f"{vid}_a", image="x", format="nifti",
                   split="train" if p < 0.6 * n_patients else "val" if p < 0.8 * n_patients else "test")
        rows.append(row)
    write_manifest(root / "manifest.csv", rows)
    pd.DataFrame({"volume_id": [r["volume_id"] for r in rows]}).to_csv(root / "qc.csv", index=False)
    return root


def test_remap_labels_orders_classes_and_binarises_lesions():
    mask = np.array([0, 1, 2, 3, 6, 4])
    assert remap_labels(mask, "organ", ["left_lung", "right_lung", "airway"]).tolist() == [0, 2, 1, 3, 0, 0]
    assert remap_labels(np.array([0, 3, 1]), "lesion", ["lesion"]).tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="unknown organ class"):
        remap_labels(mask, "organ", ["liver"])
    with pytest.raises(ValueError, match="label_map"):
        remap_labels(mask, "tumour", ["lesion"])


def test_remap_labels_reads_each_dataset_table():
    # LUNA16 stores left lung 1, right lung 2 (the synthetic corpus the other way round); BTCV liver is 6
    mask = np.array([0, 1, 2, 3, 6])
    assert remap_labels(mask, "luna16", ["left_lung", "right_lung", "trachea"]).tolist() == [0, 1, 2, 3, 0]
    assert remap_labels(mask, "btcv", ["liver", "spleen"]).tolist() == [0, 2, 0, 0, 1]
    assert mask_kind("btcv") == "organ" and mask_kind("lesion") == "lesion"
    with pytest.raises(ValueError, match="unknown luna16 class"):
        remap_labels(mask, "luna16", ["airway"])


def test_crops_sample_positives_and_pad_small_volumes():
    label = torch.zeros(1, 20, 24, 10, dtype=torch.long)
    label[0, 2:5, 2:5, 2:4] = 1
    image = torch.full((1, 20, 24, 10), -0.5)
    sampler = crop_sampler((16, 16, 16), samples_per_volume=8)
    sampler.set_random_state(seed=0)
    crops = sampler({"image": image, "label": label})
    assert len(crops) == 8 and all(tuple(c["image"].shape) == (1, 16, 16, 16) for c in crops)
    assert sum(bool((c["label"] == 1).any()) for c in crops) >= 3               # pos : neg = 1 : 1
    assert min(float(c["image"].min()) for c in crops) == -1.0                  # depth padded with air


def test_unetr_learns_a_bright_sphere(tmp_path):
    run = write_sphere_run(tmp_path / "run")
    cfg = from_dict({"model": {"img_size": [32, 32, 16], "patch_size": [16, 16, 8]}})
    torch.manual_seed(0)
    out = tmp_path / "segment.json"
    metrics = evaluate_segmentation(cfg, None, run, out, classes=["right_lung"], fractions=(1.0,), steps=40,
                                    crop=(32, 32, 16), lr=2e-3, eval_every=20, feature_size=8,
                                    vit_overrides=TINY, progress=False)
    assert json.loads(out.read_text()) == json.loads(json.dumps(metrics))
    assert metrics["n"] == {"train": 6, "val": 2, "test": 2} and metrics["protocol"] == "holdout"
    result = metrics["fractions"]["100"]
    assert set(result["test"]["dice"]) == {"right_lung"}                        # no background entry
    # chance: every voxel foreground gives Dice ~ 2 * 450 / (450 + 32000) ~ 0.03
    assert result["test"]["mean_dice"] >= 0.7, result
    assert [h[0] for h in result["history"]] == [20, 40] and result["best_step"] in (20, 40)


class _Threshold(torch.nn.Module):
    """A fixed 'model': class 1 above 250 HU (the sphere, not the 200 HU bone box), else background."""
    img_size = (32, 32, 16)

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))           # segment_dice reads the device from it

    def forward(self, x):
        fg = (x > 0.25).float()
        return torch.cat([1 - fg, fg, torch.zeros_like(fg)], dim=1)


def test_a_class_absent_from_every_ground_truth_has_no_dice(tmp_path):
    run = write_sphere_run(tmp_path / "run", n_patients=3)
    cases = segmentation_cases(run, ["p0", "p1"], "organ", ["right_lung", "heart"])   # no heart anywhere
    result = segment_dice(_Threshold(), cases, overlap=0.0)
    assert np.isnan(result["dice"]["heart"])                             # no score (null in JSON), not MONAI's 0.0
    assert result["dice"]["right_lung"] > 0.5
    assert result["mean_dice"] == pytest.approx(result["dice"]["right_lung"])


def test_segment_official_vit_switch_reaches_the_unetr(tmp_path, monkeypatch):
    """`segment.official_vit: true` builds every UNETR with the official (no-CLS, 2d_legacy) encoder path."""
    import simcrop.evaluate.segment as segment_mod
    run = write_sphere_run(tmp_path / "run")
    built = []

    def fake_train(model, train, val, *args, **kwargs):
        built.append(model)
        return model, {"best_step": 0, "val_mean_dice": None, "history": []}

    monkeypatch.setattr(segment_mod, "train_segmentation", fake_train)
    monkeypatch.setattr(segment_mod, "segment_dice", lambda *a, **k: {"mean_dice": None, "dice": {}, "n_volumes": 0})
    for switch in (True, False):
        cfg = from_dict({"model": {"img_size": [32, 32, 16], "patch_size": [16, 16, 8]},
                         "segment": {"official_vit": switch}})
        metrics = evaluate_segmentation(cfg, None, run, tmp_path / f"{switch}.json", classes=["right_lung"],
                                        fractions=(1.0,), crop=(32, 32, 16), feature_size=8, vit_overrides=TINY,
                                        progress=False)
        assert built[-1].official_vit is switch and metrics["official_vit"] is switch
        assert built[-1].encoder.pos_embed_kind == ("2d_legacy" if switch else "3d_sincos")
    with pytest.raises(Exception, match="official_vit"):
        from_dict({"segment": {"official_vit": "yes"}})
