"""Linear probe: nested patient-level fractions, splits and protocols, a planted signal that a frozen
(random-init or loaded) encoder's features separate, a shuffled-label control, and the feature cache."""
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
from simcrop.model.vit3d import build_vit
from simcrop.data.splits import nested_fractions, split_ids
from simcrop.evaluate import probe_features
from simcrop.evaluate.metrics import auroc_per_class
from simcrop.evaluate.metrics import bootstrap_statistic as main_statistic
from simcrop.evaluate.probe import evaluate_probe, probe_metrics, train_probe
from simcrop.evaluate.probe_features import build_encoder, extract_features, pooled_features, tiled_features
from simcrop.evaluate.tiling import tiling

TINY = {"embed_dim": 48, "depth": 2, "num_heads": 3}
MODEL = {"model": {"img_size": [32, 32, 16], "patch_size": [16, 16, 8]}}


def write_blob_run(root: Path, n_patients: int = 100, shape=(36, 36, 18), seed: int = 0) -> Path:
    """One volume per patient (two for every fourth); label Blob = a bright sphere inside the centre
    crop; label Coin = a fair coin (no image signal). Splits: 60 % train, 20 % val, 20 % test patients."""
    rng = np.random.default_rng(seed)
    (root / "preprocessed" / "volumes").mkdir(parents=True)
    grid = np.stack(np.meshgrid(*[np.arange(d) for d in shape], indexing="ij"))
    rows = []
    for p in range(n_patients):
        split = "train" if p < 0.6 * n_patients else "val" if p < 0.8 * n_patients else "test"
        for v in range(2 if p % 4 == 0 else 1):
            vid = f"p{p}_v{v}"
            blob = (p + v) % 2
            hu = rng.normal(-700, 120, shape)
            if blob:
                centre = rng.uniform([12, 12, 6], [24, 24, 12])
                r = np.sqrt((((grid.T - centre) / [1, 1, 0.5]) ** 2).sum(-1)).T
                hu[r < 8] = 700
            nib.save(nib.Nifti1Image(np.clip(hu, -1000, 1000).astype(np.int16), np.diag([3.0, 3.0, 6.0, 1.0])),
                     root / "preprocessed" / "volumes" / f"{vid}.nii.gz")
            row = empty_row()
            row.update(volume_id=vid, patient_id=f"p{p}", scan_id=f"p{p}_a", split=split, image="x", format="nifti",
                       labels=json.dumps({"Blob": blob, "Coin": int(rng.integers(2))}))
            rows.append(row)
    write_manifest(root / "manifest.csv", rows)
    pd.DataFrame({"volume_id": [r["volume_id"] for r in rows]}).to_csv(root / "qc.csv", index=False)
    return root


@pytest.fixture(scope="module")
def blob_run(tmp_path_factory):
    return write_blob_run(tmp_path_factory.mktemp("blob_run"))


def test_nested_fractions_are_nested_and_patient_level():
    ids = [f"v{i}" for i in range(300)]
    patients = [f"p{i // 3}" for i in range(300)]                     # 100 patients, 3 volumes each
    labels = np.zeros((300, 2))
    labels[[5, 6, 150], 0] = 1                                        # rare class: patients p1, p50
    labels[::7, 1] = 1
    subsets = nested_fractions(ids, patients, (0.01, 0.1, 1.0), seed=3, labels=labels)
    small, mid, full = (set(subsets[f]) for f in (0.01, 0.1, 1.0))
    assert small <= mid <= full and full == set(ids)
    for subset in (small, mid):
        chosen = {patients[ids.index(v)] for v in subset}
        assert subset == {v for v, p in zip(ids, patients) if p in chosen}   # whole patients only
        assert labels[[ids.index(v) for v in subset]].max(0).tolist() == [1, 1]
    assert len({patients[ids.index(v)] for v in small}) <= 3          # 1 patient, plus top-ups for classes
    assert 10 <= len({patients[ids.index(v)] for v in mid}) <= 12
    assert nested_fractions(ids, patients, (0.1,), seed=3) == nested_fractions(ids, patients, (0.1,), seed=3)
    assert nested_fractions(ids, patients, (0.1,), seed=3) != nested_fractions(ids, patients, (0.1,), seed=4)
    with pytest.raises(ValueError, match="fractions"):
        nested_fractions(ids, patients, (0.0,))


def test_splits_hold_out_val_unless_val_is_test(blob_run):
    manifest = pd.read_csv(blob_run / "manifest.csv", dtype=str, keep_default_na=False)
    held = split_ids(manifest)
    assert set(held["val"]).isdisjoint(held["test"]) and set(held["train"]).isdisjoint(held["val"])
    official = split_ids(manifest, "val_is_test")
    assert official["val"] == official["test"] == held["test"]
    assert set(official["train"]) == set(held["train"]) | set(held["val"])
    no_val = manifest[manifest["split"] != "val"]
    carved = split_ids(no_val, val_fraction=0.2, seed=1)
    patient = dict(zip(manifest["volume_id"], manifest["patient_id"]))
    assert carved["val"] and {patient[v] for v in carved["val"]}.isdisjoint({patient[v] for v in carved["train"]})
    assert set(carved["val"]).isdisjoint(carved["test"])
    with pytest.raises(ValueError, match="protocol"):
        split_ids(manifest, "test_is_val")


def test_planted_signal_random_init_and_loaded_encoder(blob_run, tmp_path, monkeypatch):
    cfg = from_dict(MODEL)
    out = tmp_path / "random.json"
    metrics = evaluate_probe(cfg, None, blob_run, out, vit_overrides=TINY, progress=False)
    assert json.loads(out.read_text()) == json.loads(json.dumps(metrics))
    assert metrics["protocol"] == "holdout" and metrics["encoder"] == "random"
    assert list(metrics["fractions"]) == ["1", "10", "100"]
    assert [metrics["fractions"][k]["n_train"] for k in ("1", "10", "100")] == sorted(
        metrics["fractions"][k]["n_train"] for k in ("1", "10", "100"))
    full = metrics["fractions"]["100"]
    assert full["n_train"] == metrics["n"]["train"] and metrics["n"]["val"] > 0
    assert full["test"]["auroc"]["Blob"] >= 0.8, full
    assert set(full["test"]["auroc"]) == {"Blob", "Coin"}
    assert metrics["view"] == "tiles" and metrics["bootstrap"]["unit"] == "patient"
    # per-volume test scores, and a patient-bootstrap interval around the mean AUROC they reproduce
    per = full["test"]["per_volume"]
    manifest = pd.read_csv(blob_run / "manifest.csv", dtype=str, keep_default_na=False).set_index("volume_id")
    assert len(per["volume_id"]) == metrics["n"]["test"] == len(per["probabilities"]) == len(per["labels"])
    assert per["patient_id"] == [manifest.loc[v, "patient_id"] for v in per["volume_id"]]
    assert per["labels"] == [[json.loads(manifest.loc[v, "labels"])[k] for k in ("Blob", "Coin")]
                             for v in per["volume_id"]]
    probs = np.array(per["probabilities"])
    assert probs.shape == (len(per["volume_id"]), 2) and ((probs >= 0) & (probs <= 1)).all()
    stat = main_statistic("multilabel", per["labels"], probs)
    assert stat(np.arange(len(probs))) == pytest.approx(full["test"]["mean_auroc"])
    ci = full["test"]["intervals"]["mean_auroc"]
    assert ci["value"] == pytest.approx(full["test"]["mean_auroc"]) and ci["lo"] < ci["value"] < ci["hi"]

    # a saved encoder: features come from it, are cached, and the second run reads the cache only
    torch.manual_seed(5)
    vit = build_vit(TINY, img_size=(32, 32, 16), patch_size=(16, 16, 8))
    (tmp_path / "mae").mkdir()
    torch.save({"model": vit.state_dict()}, tmp_path / "mae" / "encoder.pt")
    first = evaluate_probe(cfg, tmp_path / "mae" / "encoder.pt", blob_run, tmp_path / "mae.json",
                           fractions=(1.0,), vit_overrides=TINY, protocol="val_is_test", progress=False)
    assert first["protocol"] == "val_is_test" and first["n"]["val"] == first["n"]["test"]
    assert first["fractions"]["100"]["test"]["auroc"]["Blob"] >= 0.8
    caches = sorted((tmp_path / "features").glob("*.pt"))
    assert [c.name.split("-")[0] for c in caches] == ["mae", "random"]
    assert all(c.name.endswith("-tiles.pt") for c in caches)            # the view is part of the key
    monkeypatch.setattr(probe_features, "patch_tokens", lambda *a: pytest.fail("features recomputed"))
    again = evaluate_probe(cfg, tmp_path / "mae" / "encoder.pt", blob_run, tmp_path / "mae2.json",
                           fractions=(1.0,), vit_overrides=TINY, protocol="val_is_test", progress=False)
    assert again["fractions"] == first["fractions"]


def test_shuffled_labels_stay_near_chance(blob_run):
    cfg = from_dict(MODEL)
    manifest = pd.read_csv(blob_run / "manifest.csv", dtype=str, keep_default_na=False)
    labels = {v: json.loads(s)["Blob"] for v, s in zip(manifest["volume_id"], manifest["labels"])}
    vit = build_encoder(cfg.model, vit_overrides=TINY)
    ids, feats = extract_features(vit, {v: blob_run / "preprocessed" / "volumes" / f"{v}.nii.gz" for v in labels},
                                  progress=False)
    y = torch.tensor([[float(labels[v])] for v in ids])
    splits = split_ids(manifest)
    idx = {s: [ids.index(v) for v in splits[s]] for s in splits}
    true, control = [], []
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = ((feats[idx[s]], y[idx[s]]) for s in splits)
    for seed in range(4):
        shuffled = train_y[torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))]
        for labels, scores in ((train_y, true), (shuffled, control)):
            head, _ = train_probe(train_x, labels, val_x, val_y, steps=300, seed=seed)
            with torch.no_grad():
                scores.append(probe_metrics(head(test_x), test_y, "multilabel", ["Blob"])["mean_auroc"])
    assert np.mean(true) >= 0.85, true
    assert abs(np.mean(control) - 0.5) < 0.2, control


def test_multiclass_probe_accuracy():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (3, 16)) * 2
    y = torch.from_numpy(rng.integers(0, 3, 240))
    x = torch.from_numpy(centres[y.numpy()] + rng.normal(0, 1, (240, 16))).float()
    head, info = train_probe(x[:160], y[:160], x[160:200], y[160:200], task="multiclass",
                             label_names=["NCP", "CP", "Normal"], steps=300)
    assert head[1].out_features == 3 and len(info["history"]) == 60
    with torch.no_grad():
        assert probe_metrics(head(x[200:]), y[200:], "multiclass", ["NCP", "CP", "Normal"])["accuracy"] >= 0.8
    with pytest.raises(ValueError, match="task"):
        train_probe(x, y, x, y, task="regression")


def test_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=(50, 3)), 1)                   # rounding makes ties
    targets = (rng.random((50, 3)) < 0.3).astype(float)
    targets[:, 2] = 0
    got = auroc_per_class(scores, targets)
    assert np.isnan(got[2])                                            # undefined: NaN, null in JSON
    for k in range(2):
        assert got[k] == pytest.approx(roc_auc_score(targets[:, k], scores[:, k]), abs=1e-12)


def _volume(shape=(60, 60, 30), seed=0):
    return torch.from_numpy(np.random.default_rng(seed).uniform(-0.9, -0.7, shape).astype(np.float32))


def test_tiles_cover_every_voxel_and_weigh_voxels_equally():
    layout = tiling((60, 60, 30), (32, 32, 16), (16, 16, 8))
    seen = np.zeros(layout.padded, dtype=bool)
    for x, y, z in layout.corners:
        seen[x:x + 32, y:y + 32, z:z + 16] = True
    (bx, by, bz) = layout.before
    assert layout.n_tiles > 1 and seen[bx:bx + 60, by:by + 60, bz:bz + 30].all()
    inside, coverage = layout.inside_fraction(), layout.coverage()
    assert (coverage >= 1).all() and coverage.max() == 8 and coverage.min() == 1
    assert inside.sum() * 16 * 16 * 8 == pytest.approx(60 * 60 * 30)       # the volume's voxels, once each


def test_one_unpadded_tile_is_the_mean_of_its_tokens():
    torch.manual_seed(0)
    vit = build_vit(TINY, img_size=(32, 32, 16), patch_size=(16, 16, 8)).eval()
    image = _volume((32, 32, 16))
    assert torch.allclose(tiled_features(vit, image), pooled_features(vit, image[None, None])[0], atol=1e-5)


def test_a_corner_lesion_moves_the_tiled_feature_not_the_centre_crop(tmp_path):
    torch.manual_seed(0)
    vit = build_vit(TINY, img_size=(32, 32, 16), patch_size=(16, 16, 8))
    clean = _volume()
    lesion = clean.clone()
    lesion[2:12, 2:12, 1:6] = 0.8                                   # the centre crop spans 14:46, 14:46, 7:23
    paths = {}
    for name, image in (("clean", clean), ("lesion", lesion)):
        hu = (image.numpy() + 1) / 2 * 2000 - 1000                  # back to HU: load_volume scales again
        nib.save(nib.Nifti1Image(np.round(hu).astype(np.int16), np.eye(4)), tmp_path / f"{name}.nii.gz")
        paths[name] = tmp_path / f"{name}.nii.gz"
    _, centre = extract_features(vit, paths, progress=False, view="center")
    _, tiles = extract_features(vit, paths, progress=False, view="tiles", cache_path=tmp_path / "c.pt")
    assert torch.allclose(centre[0], centre[1], atol=1e-6)
    assert (tiles[0] - tiles[1]).abs().max() > 1e-3
    assert torch.load(tmp_path / "c.pt", weights_only=True)["view"] == "tiles"
    _, again = extract_features(vit, paths, progress=False, view="center", cache_path=tmp_path / "c.pt")
    assert torch.allclose(again, centre)                            # a cache of another view is not reused
    with pytest.raises(ValueError, match="view"):
        extract_features(vit, paths, progress=False, view="whole")


def test_multiclass_statistic_is_accuracy():
    labels = np.eye(3)[[0, 1, 2, 0]]
    probs = np.eye(3)[[0, 1, 0, 0]] * 0.8 + 0.1
    assert main_statistic("multiclass", labels, probs)(np.arange(4)) == 0.75


def test_resampled_mean_auroc_matches_auroc_per_class_with_ties_and_repeats():
    rng = np.random.default_rng(1)
    probs = np.round(rng.random((40, 3)), 1)
    labels = (rng.random((40, 3)) < 0.3).astype(float)
    labels[:, 2] = 0                                                   # unscored class
    stat = main_statistic("multilabel", labels, probs)
    for idx in (np.arange(40), np.sort(rng.integers(0, 40, 40))):
        want = np.mean([a for a in auroc_per_class(probs[idx], labels[idx]) if not np.isnan(a)])
        assert stat(idx) == pytest.approx(want, abs=1e-12)
