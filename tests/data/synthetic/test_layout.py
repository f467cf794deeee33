"""The corpus is laid out exactly like CT-RATE v2 (docs/data.md, "CT-RATE")."""
from __future__ import annotations

import ast
import json

import nibabel as nib
import numpy as np
import pandas as pd

from simcrop.data.labels import CTRATE_LABELS, MISSING_SECTION
from simcrop.data.synthetic.layout import (LABELS_CSV, METADATA_COLUMNS, METADATA_CSV, NO_CHEST_TXT, REPORT_COLUMNS,
                                           REPORT_CSV, plan_corpus, volume_path)


def _volumes(root):
    return sorted(p for p in root.glob("*_fixed/*/*/*.nii.gz"))


def test_tree_is_ctrate_v2(corpus):
    root, summary = corpus
    vols = _volumes(root)
    assert len(vols) == summary["counts"]["volumes"]
    for path in vols:
        name = path.name[: -len(".nii.gz")]
        split = name.split("_")[0]
        assert path.parent.name == name.rsplit("_", 1)[0]
        assert path.parent.parent.name == name.rsplit("_", 2)[0]
        assert path.parent.parent.parent.name == f"{split}_fixed"
        patient, scan, recon = name.split("_")[1:]
        assert int(patient) >= 1 and scan.isalpha() and int(recon) >= 1
        assert path.relative_to(root).as_posix() == volume_path(name)
    assert {p.name.split("_")[0] for p in vols} == {"train", "valid"}


def test_volumes_are_int16_hu_with_ras_and_lps_affines(corpus):
    root, _ = corpus
    codes = set()
    for path in _volumes(root):
        img = nib.load(path)
        assert img.get_data_dtype() == np.int16
        slope, inter = img.header.get_slope_inter()
        assert slope in (None, 1.0) and inter in (None, 0.0)        # v2: stored values are HU already
        codes.add("".join(nib.aff2axcodes(img.affine)))
        assert np.all(np.abs(img.affine[:3, 3]) < 1000) and np.any(img.affine[:3, 3] != 0)
    assert codes == {"RAS", "LPS"}


def test_csv_columns_and_cells(corpus):
    root, _ = corpus
    for split in ("train", "valid"):
        reports = pd.read_csv(root / REPORT_CSV[split], keep_default_na=False)
        meta = pd.read_csv(root / METADATA_CSV[split])
        labels = pd.read_csv(root / LABELS_CSV[split])
        assert list(reports.columns) == REPORT_COLUMNS
        assert len(METADATA_COLUMNS) == 44 and list(meta.columns) == METADATA_COLUMNS
        assert list(labels.columns) == ["VolumeName", *CTRATE_LABELS]
        assert set(labels[CTRATE_LABELS].to_numpy().ravel()) <= {0, 1}
        assert meta.isna().to_numpy().any()                              # many empty cells, as in CT-RATE
        for _, row in meta.iterrows():
            spacing = ast.literal_eval(row["XYSpacing"])
            assert len(spacing) == 2 and 0.3 < spacing[0] < 3.5
            assert len(ast.literal_eval(row["ImagePositionPatient"])) == 3
            assert row["RescaleSlope"] == 1 and row["RescaleIntercept"] in (-1024, -8192)
    train = pd.read_csv(root / REPORT_CSV["train"], keep_default_na=False)
    assert (train["ClinicalInformation_EN"] == MISSING_SECTION).any()
    assert train["Findings_EN"].str.contains(",").any()                  # quoted commas round-trip
    assert (root / REPORT_CSV["train"]).read_text().count('"') > 0


def test_metadata_matches_volume_headers(corpus):
    root, _ = corpus
    meta = pd.read_csv(root / METADATA_CSV["train"])
    row = meta.iloc[0]
    img = nib.load(root / volume_path(row["VolumeName"][: -len(".nii.gz")]))
    zooms = img.header.get_zooms()
    assert np.allclose(ast.literal_eval(row["XYSpacing"]), zooms[:2])
    assert np.isclose(row["ZSpacing"], zooms[2])
    assert (row["Columns"], row["Rows"], row["NumberofSlices"]) == img.shape


def test_one_missing_report_one_missing_label_row_and_no_chest(corpus):
    root, _ = corpus
    names = {p.name for p in _volumes(root)}
    reported = set(pd.concat([pd.read_csv(root / f) for f in REPORT_CSV.values()])["VolumeName"])
    labelled = set(pd.concat([pd.read_csv(root / f) for f in LABELS_CSV.values()])["VolumeName"])
    assert len(names - reported) == 1 and len(names - labelled) == 1
    assert names - reported != names - labelled
    assert reported <= names and labelled <= names
    listed = [line.strip() for f in NO_CHEST_TXT.values() for line in (root / f).read_text().splitlines() if line]
    assert 1 <= len(listed) <= 4
    assert any("/" in line for line in listed)
    lines = {json.loads(x)["volume_id"]: json.loads(x) for x in (root / "synthetic/lesions.jsonl").read_text().splitlines()}
    for line in listed:
        name = line.rsplit("/", 1)[-1][: -len(".nii.gz")]
        assert lines[name]["kind"] == "abdomen" and lines[name]["lesions"] == []


def test_reconstructions_repeat_their_scan_report(corpus):
    root, _ = corpus
    reports = pd.read_csv(root / REPORT_CSV["train"], keep_default_na=False)
    reports["scan"] = reports["VolumeName"].str.rsplit("_", n=1).str[0]
    multi = reports.groupby("scan").filter(lambda g: len(g) > 1)
    assert len(multi) > 0
    assert (multi.groupby("scan")["Findings_EN"].nunique() == 1).all()


def test_plan_split_by_patient_and_valid_fraction():
    scans = plan_corpus(50, 0.2, 2, 2, seed=3)
    patients = {(s.split, s.patient) for s in scans}
    assert sum(1 for sp, _ in patients if sp == "valid") == 10
    assert len({s.index for s in scans}) == len(scans)
    vols = [v for s in scans for v in s.volume_indices]
    assert vols == list(range(len(vols)))
