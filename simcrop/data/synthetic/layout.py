"""CT-RATE v2 layout: the corpus plan (patients → scans → reconstructions), names, paths and the CSVs.

Names follow CT-RATE exactly: `{split}_{P}_{s}_{r}` with split train|valid, P from 1, s = a, b, …,
r = 1, 2, …; files under `{split}_fixed/{split}_{P}/{split}_{P}_{s}/`.
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from simcrop.data.labels import CTRATE_LABELS
from simcrop.io import write_csv_atomic, write_text_atomic

SPLIT_DIRS = {"train": "train_fixed", "valid": "valid_fixed"}
REPORT_CSV = {"train": "radiology_text_reports/train_reports.csv",
              "valid": "radiology_text_reports/validation_reports.csv"}
METADATA_CSV = {"train": "metadata/train_metadata.csv", "valid": "metadata/validation_metadata.csv"}
LABELS_CSV = {"train": "multi_abnormality_labels/train_predicted_labels.csv",
              "valid": "multi_abnormality_labels/valid_predicted_labels.csv"}
NO_CHEST_TXT = {"train": "metadata/no_chest_train.txt", "valid": "metadata/no_chest_valid.txt"}
REPORT_COLUMNS = ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"]
METADATA_COLUMNS = [
    "VolumeName", "Manufacturer", "SeriesDescription", "ManufacturerModelName", "PatientSex", "PatientAge",
    "ReconstructionDiameter", "DistanceSourceToDetector", "DistanceSourceToPatient", "GantryDetectorTilt",
    "TableHeight", "RotationDirection", "XRayTubeCurrent", "Exposure", "FilterType", "GeneratorPower",
    "FocalSpots", "ConvolutionKernel", "PatientPosition", "RevolutionTime", "SingleCollimationWidth",
    "TotalCollimationWidth", "TableSpeed", "TableFeedPerRotation", "SpiralPitchFactor",
    "DataCollectionCenterPatient", "ReconstructionTargetCenterPatient", "ExposureModulationType", "CTDIvol",
    "ImagePositionPatient", "ImageOrientationPatient", "SliceLocation", "SamplesPerPixel",
    "PhotometricInterpretation", "Rows", "Columns", "XYSpacing", "RescaleIntercept", "RescaleSlope",
    "RescaleType", "NumberofSlices", "ZSpacing", "StudyDate", "KVP",
]
SCANNERS = [("SIEMENS", "SOMATOM Definition Edge", ["Br40f", "Br60f", "B30f", "B70f"]),
            ("Philips", "Ingenuity CT", ["B", "YB", "C", "L"]),
            ("GE MEDICAL SYSTEMS", "Revolution EVO", ["STANDARD", "LUNG", "BONE", "SOFT"]),
            ("TOSHIBA", "Aquilion PRIME", ["FC08", "FC52", "FC18", "FC86"])]


@dataclass
class ScanPlan:
    """One scan: its reconstructions share anatomy, findings and report."""
    split: str
    patient: int
    letter: str
    index: int                   # global scan index: seeds the scan's RNG
    volume_indices: list[int]    # global volume indices: seed each reconstruction's noise
    sex: str
    age: int
    no_chest: bool = False
    clinical_given: bool = True  # False: ClinicalInformation_EN is "Not given." (~40 %, always in scan 0)
    no_report: list[str] = field(default_factory=list)    # volume names without a report row
    no_label: list[str] = field(default_factory=list)     # volume names without a label row

    @property
    def names(self) -> list[str]:
        return [f"{self.split}_{self.patient}_{self.letter}_{r + 1}" for r in range(len(self.volume_indices))]


def volume_path(name: str) -> str:
    """Relative path of a volume, folders derived from the name exactly as CT-RATE tooling does."""
    split = name.split("_", 1)[0]
    return f"{SPLIT_DIRS[split]}/{name.rsplit('_', 2)[0]}/{name.rsplit('_', 1)[0]}/{name}.nii.gz"


def plan_corpus(n_patients: int, valid_fraction: float, max_scans: int, max_recons: int, seed: int) -> list[ScanPlan]:
    """Deterministic corpus plan; raises ValueError when it cannot hold the special volumes."""
    if n_patients < 2:
        raise ValueError(f"synthesize.n_patients must be >= 2 (one train, one valid), got {n_patients}")
    if max_scans < 1 or max_recons < 1:
        raise ValueError("synthesize.max_scans and max_reconstructions must be >= 1")
    rng = np.random.default_rng([seed, 0])
    n_valid = int(np.clip(round(n_patients * valid_fraction), 1 if valid_fraction > 0 else 0, n_patients - 1))
    scans: list[ScanPlan] = []
    vol = 0
    for split, count in (("train", n_patients - n_valid), ("valid", n_valid)):
        for p in range(1, count + 1):
            sex, age = str(rng.choice(["M", "F"])), int(np.clip(rng.normal(58, 14), 19, 92))
            for s in range(int(rng.integers(1, max_scans + 1))):
                n_rec = int(rng.integers(1, max_recons + 1))
                scans.append(ScanPlan(split, p, string.ascii_lowercase[s], len(scans),
                                      list(range(vol, vol + n_rec)), sex, age))
                vol += n_rec
    for s in scans:
        s.clinical_given = bool(rng.random() >= 0.4) and s.index > 0
    train = [s for s in scans if s.split == "train"]
    # the non-chest scan: the train scan with fewest reconstructions (1–2 names in the list)
    no_chest = min(train, key=lambda s: (len(s.volume_indices), rng.random()))
    no_chest.no_chest = True
    valid = [s for s in scans if s.split == "valid"]
    if len(valid) >= 2:
        min(valid, key=lambda s: (len(s.volume_indices), rng.random())).no_chest = True
    chest = [(s, n) for s in scans if not s.no_chest for n in s.names]
    if len(chest) < 2:
        raise ValueError("corpus too small: need at least two chest volumes (raise synthesize.n_patients)")
    pick = rng.choice(len(chest), size=2, replace=False)
    chest[pick[0]][0].no_report.append(chest[pick[0]][1])
    chest[pick[1]][0].no_label.append(chest[pick[1]][1])
    return scans


def metadata_row(name: str, grid, plan: ScanPlan, recon: int, kernel_sharp: bool,
                 rng: np.random.Generator) -> dict:
    """One metadata row (44 columns); optional DICOM fields are often empty, as in CT-RATE."""
    maker, model, kernels = SCANNERS[plan.index % len(SCANNERS)]
    sx, sy, sz = grid.spacing
    nx, ny, nz = grid.shape
    # DICOM's first pixel is the patient's right-anterior corner of the lowest slice, in LPS mm
    first = np.array(grid.origin) + np.array([sx * (nx - 1), sy * (ny - 1), 0.0])
    ipp = [round(float(-first[0]), 3), round(float(-first[1]), 3), round(float(first[2]), 3)]
    maybe = lambda value, p=0.3: "" if rng.random() < p else value   # noqa: E731
    row = {c: "" for c in METADATA_COLUMNS}
    row.update({
        "VolumeName": f"{name}.nii.gz", "Manufacturer": maker,
        "SeriesDescription": ("LUNG" if kernel_sharp else "MEDIASTINUM") + f" {sz:g} mm",
        "ManufacturerModelName": model, "PatientSex": plan.sex, "PatientAge": f"{plan.age:03d}Y",
        "ReconstructionDiameter": round(sx * nx, 1), "DistanceSourceToDetector": maybe(1085.6, 0.5),
        "DistanceSourceToPatient": maybe(595.0, 0.5), "GantryDetectorTilt": 0.0,
        "TableHeight": maybe(round(float(rng.uniform(120, 190)), 1)), "RotationDirection": maybe("CW", 0.5),
        "XRayTubeCurrent": int(rng.integers(60, 400)), "Exposure": maybe(int(rng.integers(20, 300))),
        "FilterType": maybe("BODY FILTER", 0.5), "GeneratorPower": maybe(int(rng.integers(10, 60)), 0.6),
        "FocalSpots": maybe("1.2", 0.7), "ConvolutionKernel": kernels[(recon + (1 if kernel_sharp else 0)) % 4],
        "PatientPosition": "FFS" if rng.random() < 0.3 else "HFS", "RevolutionTime": maybe(0.5, 0.5),
        "SingleCollimationWidth": maybe(0.625, 0.5), "TotalCollimationWidth": maybe(40.0, 0.5),
        "TableSpeed": maybe(78.75, 0.6), "TableFeedPerRotation": maybe(39.375, 0.6),
        "SpiralPitchFactor": maybe(0.984375, 0.5), "DataCollectionCenterPatient": "",
        "ReconstructionTargetCenterPatient": "", "ExposureModulationType": maybe("XYZ_EC", 0.6),
        "CTDIvol": maybe(round(float(rng.uniform(2, 15)), 2)), "ImagePositionPatient": str(ipp),
        "ImageOrientationPatient": "[1, 0, 0, 0, 1, 0]", "SliceLocation": ipp[2], "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2", "Rows": ny, "Columns": nx, "XYSpacing": str([sx, sy]),
        "RescaleIntercept": -8192 if plan.index % 9 == 4 else -1024, "RescaleSlope": 1,
        "RescaleType": maybe("HU", 0.5), "NumberofSlices": nz, "ZSpacing": float(sz),
        "StudyDate": "", "KVP": int(rng.choice([100, 120, 120, 140])),
    })
    return row


def write_tables(root: Path, scans: list[ScanPlan], results: dict[int, dict]) -> dict:
    """Reports, metadata, labels and no_chest lists for both splits; returns row counts."""
    counts = {}
    for split in ("train", "valid"):
        reports, meta, labels, no_chest = [], [], [], []
        for plan in (s for s in scans if s.split == split):
            res = results[plan.index]
            for name, row in zip(plan.names, res["metadata"]):
                meta.append(row)
                if name not in plan.no_report:
                    reports.append({"VolumeName": f"{name}.nii.gz", **res["report"]})
                if name not in plan.no_label:
                    labels.append({"VolumeName": f"{name}.nii.gz", **res["labels"]})
                if plan.no_chest:
                    # CT-RATE lists names, sometimes with the path prefix: keep both styles
                    no_chest.append(volume_path(name) if name.endswith("_1") else f"{name}.nii.gz")
        write_csv_atomic(root / REPORT_CSV[split], pd.DataFrame(reports, columns=REPORT_COLUMNS))
        write_csv_atomic(root / METADATA_CSV[split], pd.DataFrame(meta, columns=METADATA_COLUMNS))
        write_csv_atomic(root / LABELS_CSV[split], pd.DataFrame(labels, columns=["VolumeName", *CTRATE_LABELS]))
        write_text_atomic(root / NO_CHEST_TXT[split], "".join(f"{line}\n" for line in no_chest))
        counts[split] = {"volumes": len(meta), "reports": len(reports), "label_rows": len(labels),
                         "no_chest": len(no_chest)}
    return counts
