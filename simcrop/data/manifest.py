"""The common manifest: one row per volume, written by every adapter, read by everything downstream.

Columns (CSV, UTF-8, written atomically):

| column | meaning |
|---|---|
| volume_id | unique id, the file stem (CT-RATE: `train_12_a_1`); a plain file name (`safe_volume_id`) |
| patient_id | dataset-scoped patient id (CT-RATE: `train_12`; valid ids reuse train integers) |
| scan_id | patient + scan letter; reconstructions of one scan share it and its report |
| split | `train`, `val` or `test`, assigned per patient, never per volume |
| image | path of the volume (NIfTI file, DICOM folder, .mhd or .npz) |
| format | `nifti`, `dicom`, `mhd` or `npz` |
| source | adapter name (`ctrate`, `synthetic`, `folder`, ...) |
| release | CT-RATE release `v1` or `v2`; empty for other sources |
| apply_rescale | 1 when HU = slope * stored + intercept must still be applied (CT-RATE v1 only) |
| rescale_slope, rescale_intercept | the values to apply when apply_rescale is 1 |
| spacing_x, spacing_y, spacing_z | spacing in mm from metadata (used when the header has none) |
| spacing_source | `header` or `metadata` |
| findings, impressions, clinical_information, technique | report sections; empty when "Not given." |
| labels | JSON object {label name: 0/1}; empty when the dataset has no labels |
| lesion_mask, organ_mask | paths of label maps on the image grid (synthetic corpus, segmentation sets) |
| lesions | JSON list of planted lesions with the Findings character span of the sentence naming each |
"""
from __future__ import annotations

import json
import os

import pandas as pd

from simcrop.io import DataError, read_csv, write_csv_atomic

MANIFEST_COLUMNS = [
    "volume_id", "patient_id", "scan_id", "split", "image", "format", "source", "release",
    "apply_rescale", "rescale_slope", "rescale_intercept",
    "spacing_x", "spacing_y", "spacing_z", "spacing_source",
    "findings", "impressions", "clinical_information", "technique",
    "labels", "lesion_mask", "organ_mask", "lesions",
]
SPLITS = ("train", "val", "test")
TEXT_COLUMNS = ("volume_id", "patient_id", "scan_id", "split", "image", "format", "source", "release",
                "spacing_source", "findings", "impressions", "clinical_information", "technique",
                "labels", "lesion_mask", "organ_mask", "lesions")


class ManifestError(DataError):
    """A manifest that breaks the contract above; the message names the file and the problem."""


def unsafe_id_reason(volume_id) -> str | None:
    """Why `volume_id` cannot be a file name under an output folder, or None when it can.

    Outputs are `<folder>/<volume_id>.nii.gz` and the like: a `/` or `..` would write outside the folder,
    and a leading `.` would look like a hidden or temporary file that every reader skips.
    """
    text = str(volume_id)
    if not text.strip():
        return "empty"
    if "/" in text or "\\" in text:
        return "contains a path separator ('/' or '\\')"
    if "\0" in text:
        return "contains a NUL character"
    if text.startswith("."):
        return "starts with '.' (hidden, or a '..' path component)"
    return None


def safe_volume_id(volume_id) -> str:
    """`volume_id` as a string, or ManifestError when it cannot be used as a file name (see unsafe_id_reason)."""
    reason = unsafe_id_reason(volume_id)
    if reason:
        raise ManifestError(f"volume_id {str(volume_id)!r} {reason}: volume ids become output file names")
    return str(volume_id)


def _check_ids(frame: pd.DataFrame, where: str) -> None:
    for number, volume_id in enumerate(frame["volume_id"], 1):
        reason = unsafe_id_reason(volume_id)
        if reason:
            raise ManifestError(f"{where}: row {number}: volume_id {str(volume_id)!r} "
                                f"{reason}; volume ids become output file names, so each must be a plain "
                                "name (no '/', '\\', leading '.'); rename the volume or fix the id")


def empty_row() -> dict:
    row = {column: "" for column in MANIFEST_COLUMNS}
    row.update(apply_rescale=0, rescale_slope=1.0, rescale_intercept=0.0,
               spacing_x=float("nan"), spacing_y=float("nan"), spacing_z=float("nan"),
               spacing_source="header")
    return row


def validate(frame: pd.DataFrame, where: str = "manifest") -> pd.DataFrame:
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(f"{where}: missing columns {missing}")
    _check_ids(frame, where)
    duplicated = frame["volume_id"][frame["volume_id"].duplicated()].tolist()
    if duplicated:
        raise ManifestError(f"{where}: duplicated volume_id {duplicated[:5]}")
    bad_split = sorted(set(frame["split"]) - set(SPLITS))
    if bad_split:
        raise ManifestError(f"{where}: unknown split values {bad_split}; expected {list(SPLITS)}")
    leaked = frame.groupby("patient_id")["split"].nunique()
    leaked = leaked[leaked > 1].index.tolist()
    if leaked:
        raise ManifestError(f"{where}: patients in more than one split {leaked[:5]}")
    return frame


def write_manifest(path: str | os.PathLike, rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    frame = validate(frame[MANIFEST_COLUMNS].copy(), str(path))
    write_csv_atomic(path, frame)
    return frame


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    if not os.path.exists(path):
        raise ManifestError(f"{path}: manifest not found")
    frame = read_csv(path, "manifest", dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False)
    return validate(frame, str(path))


def count_rows(path: str | os.PathLike) -> int:
    """Row count without parsing the whole table (Snakemake calls this while it builds the DAG)."""
    return len(read_csv(path, "manifest", usecols=["volume_id"], dtype=str))


def labels_of(row) -> dict:
    return json.loads(row["labels"]) if row["labels"] else {}


def lesions_of(row) -> list:
    return json.loads(row["lesions"]) if row["lesions"] else []
