"""Tiny CT-RATE trees for adapter and ingest tests (8 x 8 x 4 int16 volumes, CSVs shaped like the real ones)."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from simcrop.data.labels import CTRATE_LABELS

# The first metadata columns of the real CSV, then fillers up to its 44 columns (most cells empty).
METADATA_HEAD = ["VolumeName", "Manufacturer", "SeriesDescription", "ManufacturerModelName", "PatientSex",
                 "PatientAge", "XYSpacing", "ZSpacing", "RescaleIntercept", "RescaleSlope",
                 "ImagePositionPatient", "ImageOrientationPatient"]
METADATA_COLUMNS = METADATA_HEAD + [f"Unused{i}" for i in range(44 - len(METADATA_HEAD))]

DEFAULT_VOLUMES = ["train_1_a_1", "train_1_a_2", "train_1_b_1", "train_2_a_1", "train_3_a_1", "train_4_a_1",
                   "train_5_a_1", "train_6_a_1", "valid_1_a_1", "valid_2_a_1"]
HU_VALUE = -700  # every planted voxel, in HU


def findings_of(name: str) -> str:
    scan = name.rsplit("_", 1)[0]
    return f"Findings of {scan}: a nodule, 3.5 mm, in the right upper lobe, unchanged. No effusion."


def label_of(name: str, index: int) -> int:
    return (len(name) + index) % 2


def write_ctrate_tree(root: Path, release: str = "v2", volumes=DEFAULT_VOLUMES, *, no_report=(), no_labels=(),
                      no_metadata=(), extra_report_rows=(), no_chest=(), findings=None,
                      intercepts=None) -> Path:
    """Write a CT-RATE-shaped tree; returns root. v1 volumes hold stored values (HU - intercept, slope 1)."""
    root = Path(root)
    findings, intercepts = dict(findings or {}), dict(intercepts or {})
    reports = {"train": [], "valid": []}
    labels = {"train": [], "valid": []}
    metadata = {"train": [], "valid": []}
    for name in volumes:
        split = name.split("_", 1)[0]
        folder = root / (split if release == "v1" else f"{split}_fixed") / name.rsplit("_", 2)[0] / name.rsplit("_", 1)[0]
        folder.mkdir(parents=True, exist_ok=True)
        intercept = intercepts.get(name, -1024.0)
        stored = HU_VALUE - intercept if release == "v1" else HU_VALUE
        data = np.full((8, 8, 4), stored, dtype=np.int16)
        affine = np.eye(4) if release == "v1" else np.diag([0.7, 0.7, 1.5, 1.0])
        nib.save(nib.Nifti1Image(data, affine), folder / f"{name}.nii.gz")
        if name not in no_report:
            reports[split].append({"VolumeName": f"{name}.nii.gz", "ClinicalInformation_EN": "Not given.",
                                   "Technique_EN": "Non-contrast chest CT, 1 mm slices, lung and soft tissue",
                                   "Findings_EN": findings.get(name, findings_of(name)),
                                   "Impressions_EN": "Not given." if name.endswith("_2") else "Stable nodule."})
        if name not in no_labels:
            labels[split].append({"VolumeName": f"{name}.nii.gz",
                                  **{lab: label_of(name, i) for i, lab in enumerate(CTRATE_LABELS)}})
        if name not in no_metadata:
            row = {c: "" for c in METADATA_COLUMNS}
            row.update(VolumeName=f"{name}.nii.gz", Manufacturer="SIEMENS", XYSpacing="[0.75, 0.8]",
                       ZSpacing=1.5, RescaleIntercept=intercept, RescaleSlope=1.0,
                       ImagePositionPatient="[-180.0, -170.5, -300.0]",
                       ImageOrientationPatient="[1, 0, 0, 0, 1, 0]")
            metadata[split].append(row)
    for name in extra_report_rows:
        split = name.split("_", 1)[0]
        reports[split].append({"VolumeName": f"{name}.nii.gz", "Findings_EN": "A report, no volume.",
                               "Impressions_EN": "x", "ClinicalInformation_EN": "", "Technique_EN": ""})
    for split, csv_stem in (("train", "train"), ("valid", "validation")):
        report_cols = ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"]
        _csv(root / "radiology_text_reports" / f"{csv_stem}_reports.csv", reports[split], report_cols)
        _csv(root / "multi_abnormality_labels" / f"{split}_predicted_labels.csv", labels[split],
             ["VolumeName", *CTRATE_LABELS])
        _csv(root / "metadata" / f"{csv_stem}_metadata.csv", metadata[split], METADATA_COLUMNS)
        lines = [line for line in no_chest if line.rsplit("/", 1)[-1].startswith(split)]
        (root / "metadata" / f"no_chest_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def write_lesions(root: Path, volumes=DEFAULT_VOLUMES, skip=()) -> dict:
    """`root/synthetic/lesions.jsonl` with one lesion per volume, spanning Findings' first sentence."""
    records = {}
    for name in volumes:
        if name in skip:
            continue
        first = findings_of(name).index(".", findings_of(name).index("unchanged")) + 1
        records[name] = {"volume_id": name, "lesion_mask": f"synthetic/masks/{name}_lesions.nii.gz",
                         "organ_mask": f"synthetic/masks/{name}_organs.nii.gz",
                         "lesions": [{"id": 1, "label": "Lung nodule", "location": "right upper lobe",
                                      "center_ras_mm": [10.0, 5.0, -20.0], "size_mm": 3.5,
                                      "sentence": findings_of(name)[:first], "sentence_span": [0, first]}]}
    path = root / "synthetic" / "lesions.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records.values()))
    return records


def _csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
