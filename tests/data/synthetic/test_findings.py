"""Planted findings: labels, masks at the named location, sparse small lesions, sentence spans."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd

from simcrop.data.labels import CTRATE_LABELS
from simcrop.data.synthetic import ORGAN_LABELS
from simcrop.data.synthetic.findings import NORMAL_FRACTION, PLANTERS, draw_findings, plant
from simcrop.data.synthetic.layout import LABELS_CSV, REPORT_CSV
from simcrop.data.synthetic.phantom import build_phantom, draw_anatomy
from simcrop.data.synthetic.presets import PRESETS, draw_grid
from simcrop.data.synthetic.shapes import Frame

FOCAL = {"Lung nodule", "Lymphadenopathy", "Hiatal hernia"}
LUNG = {"Lung nodule", "Lung opacity", "Consolidation", "Atelectasis", "Pulmonary fibrotic sequela"}


def _lines(root):
    return [json.loads(x) for x in (root / "synthetic/lesions.jsonl").read_text().splitlines()]


def test_at_least_ten_labels_are_plantable_and_all_planters_run():
    assert set(PLANTERS) <= set(CTRATE_LABELS) and len(PLANTERS) >= 10
    rng = np.random.default_rng([11, 0])
    grid, place = draw_grid(PRESETS["small"], rng)
    anatomy = draw_anatomy(rng, place["z_apex"] - grid.origin[2])
    anatomy.heart_scale = 1.3
    frame = Frame(grid, **place)
    mask, records = plant(build_phantom(anatomy, frame, rng), frame, list(PLANTERS), rng)
    assert len({r["label"] for r in records}) >= 10           # a few may find their spot already taken
    for r in records:
        assert (mask == r["id"]).any(), r["label"]
    assert [r["id"] for r in records] == list(range(1, len(records) + 1))


def test_normal_share():
    rng = np.random.default_rng(0)
    normal = np.mean([not draw_findings(rng) for _ in range(600)])
    assert abs(normal - NORMAL_FRACTION) < 0.06 and 0.3 <= NORMAL_FRACTION <= 0.4


def test_lesion_masks_sit_where_the_report_says(corpus):
    root, _ = corpus
    reports = pd.concat([pd.read_csv(root / f, keep_default_na=False) for f in REPORT_CSV.values()])
    findings = dict(zip(reports["VolumeName"], reports["Findings_EN"]))
    n_checked = 0
    for line in _lines(root):
        img = nib.load(root / line["lesion_mask"])
        mask = np.asanyarray(img.dataobj)
        organs = np.asanyarray(nib.load(root / line["organ_mask"]).dataobj)
        assert mask.dtype == np.int16 and organs.dtype == np.uint8 and mask.shape == organs.shape
        assert sorted(set(np.unique(mask)) - {0}) == [les["id"] for les in line["lesions"]]
        text = findings.get(f"{line['volume_id']}.nii.gz")
        for les in line["lesions"]:
            voxels = np.argwhere(mask == les["id"])
            assert len(voxels) == les["n_voxels"] > 0
            if text is not None:
                start, end = les["sentence_span"]
                assert text[start:end] == les["sentence"]
            if les["label"] in FOCAL:
                ijk = np.linalg.solve(img.affine, [*les["center_ras_mm"], 1.0])[:3]
                assert np.min(np.abs(voxels - ijk).max(axis=1)) <= 1.5, les
            if les["label"] in LUNG:
                side = "right_lung" if les["location"].startswith("right") else "left_lung"
                hit = organs[tuple(voxels.T)]
                assert np.mean(hit == ORGAN_LABELS[side]) > 0.5, les
            n_checked += 1
    assert n_checked > 0


def test_small_lesions_are_sparse(corpus):
    """A nodule touches a few of the 14³ = 2744 patches of 24 mm, never a large share."""
    root, _ = corpus
    for line in _lines(root):
        nodules = [les for les in line["lesions"] if les["label"] == "Lung nodule"]
        if not nodules:
            continue
        img = nib.load(root / line["lesion_mask"])
        mask = np.asanyarray(img.dataobj)
        for les in nodules:
            mm = nib.affines.apply_affine(img.affine, np.argwhere(mask == les["id"]))
            patches = {tuple(p) for p in np.floor(mm / 24.0).astype(int)}
            assert len(patches) <= 8


def test_label_rows_equal_planted_findings(corpus):
    root, _ = corpus
    labels = pd.concat([pd.read_csv(root / f) for f in LABELS_CSV.values()]).set_index("VolumeName")
    for line in _lines(root):
        key = f"{line['volume_id']}.nii.gz"
        if key in labels.index:
            planted = {les["label"] for les in line["lesions"]}
            assert {c for c in CTRATE_LABELS if labels.loc[key, c] == 1} == planted


def test_airway_and_interstitial_findings_look_like_ct():
    """Bronchiectasis: air lumen in a soft-tissue wall; peribronchial cuffs: soft tissue; septal lines and
    mosaic patches: inside the lung, septa denser than lung, mosaic slightly darker than lung."""
    new = ["Bronchiectasis", "Peribronchial thickening", "Interlobular septal thickening", "Mosaic attenuation pattern"]
    seen = set()
    for seed in range(3):
        rng = np.random.default_rng([12, seed])
        grid, place = draw_grid(PRESETS["small"], rng)
        anatomy = draw_anatomy(rng, place["z_apex"] - grid.origin[2])
        frame = Frame(grid, **place)
        ph = build_phantom(anatomy, frame, rng)
        lung_hu = np.median(ph["hu"][ph["lobes"] > 0])
        mask, records = plant(ph, frame, new, rng)
        for r in records:
            m = mask == r["id"]
            hu, lobes = ph["hu"][m], ph["lobes"][m]
            seen.add(r["label"])
            assert np.mean(lobes > 0) > 0.9, r                       # in the lung
            if r["label"] == "Bronchiectasis":
                assert np.mean(hu < -900) > 0.2 and np.mean(hu > -100) > 0.2, r
            elif r["label"] == "Peribronchial thickening":
                assert np.median(hu) > -100, r
            elif r["label"] == "Interlobular septal thickening":
                assert lung_hu + 150 < np.median(hu) < 50, r
                assert m.sum() < 0.3 * (ph["lobes"] > 0).sum(), r      # lines, not a filled region
            else:
                assert -960 < np.median(hu) < lung_hu - 20, r
            if not r["location"].startswith("both"):
                side = r["location"].split()[0]
                assert np.all(np.isin(lobes, [1, 2, 3] if side == "right" else [4, 5])), r
    assert seen == set(new)
