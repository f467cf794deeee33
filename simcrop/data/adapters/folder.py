"""Generic adapter: a folder of NIfTI files and/or DICOM series folders, plus an optional reports CSV.

volume_id is the file stem (`case1.nii.gz` → `case1`) or the series folder name; every volume is its own
patient and scan unless the CSV has a patient column. Spacing comes from the image header.
Rows come out with the provisional split `train`; `simcrop.data.ingest` holds out `val` per patient.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from simcrop.config import FolderAdapterConfig
from simcrop.data.adapters.ctrate import clean_section, first_of_duplicates, volume_key
from simcrop.data.manifest import empty_row
from simcrop.io import DataError, read_csv

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def dicom_series_ids(folder: str | Path) -> tuple[str, ...]:
    """Series instance UIDs of the DICOM files directly inside `folder` (GDCM, as SimpleITK reads them)."""
    import SimpleITK as sitk

    return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ())


def find_volumes(images: str | Path) -> tuple[list[tuple[str, Path, str]], dict]:
    """(volume_id, path, format) for every NIfTI file and single-series DICOM folder under `images`."""
    images = Path(images)
    if not images.is_dir():
        raise ValueError(f"{images}: image folder not found")
    found: list[tuple[str, Path, str]] = []
    stats = dict(multi_series_folders=0)
    for dirpath, dirnames, filenames in os.walk(images, followlinks=True):
        dirnames.sort()
        here = Path(dirpath)
        nifti = sorted(f for f in filenames if f.endswith(NIFTI_SUFFIXES))
        found += [(volume_key(f), here / f, "nifti") for f in nifti]
        others = [f for f in filenames if f not in nifti and not f.startswith(".")]
        if not others:
            continue
        series = dicom_series_ids(here)
        if len(series) == 1:
            found.append((here.name, here, "dicom"))
        elif len(series) > 1:
            stats["multi_series_folders"] += 1
            log.warning("%s holds %d DICOM series; skipped (put one series per folder)", here, len(series))
    ids = pd.Series([volume_id for volume_id, _, _ in found], dtype=str)
    clashes = sorted(set(ids[ids.duplicated()]))
    if clashes:
        paths = [str(p) for v, p, _ in found if v == clashes[0]]
        raise ValueError(f"{images}: volume ids must be unique; {clashes[0]!r} names {paths}")
    return found, stats


def read_reports(cfg: FolderAdapterConfig) -> pd.DataFrame | None:
    """The reports CSV indexed by volume key (first row of a duplicated id, with a warning naming the ids),
    or None when none is configured. DataError names the file for a missing, empty or non-UTF-8 CSV."""
    if not cfg.reports_csv:
        return None
    path = Path(cfg.reports_csv)
    if not path.is_file():
        raise DataError(f"{path}: reports CSV not found (data.folder.reports_csv)")
    frame = read_csv(path, "reports CSV (data.folder.reports_csv)", dtype=str, keep_default_na=False)
    required = {"id_column": cfg.id_column, "findings_column": cfg.findings_column,
                "impressions_column": cfg.impressions_column}
    if cfg.patient_column:
        required["patient_column"] = cfg.patient_column
    for key, column in required.items():
        if column not in frame.columns:
            raise DataError(f"{path}: missing column {column!r} (data.folder.{key}); "
                            f"columns are {list(frame.columns)}")
    frame.index = frame[cfg.id_column].map(volume_key)
    return first_of_duplicates(frame, path, cfg.id_column)


def read_folder(cfg: FolderAdapterConfig, images: str | Path | None = None,
                source: str = "folder") -> tuple[list[dict], dict]:
    """Folder of images (+ reports CSV) → (manifest rows with split `train`, ingest statistics)."""
    volumes, stats = find_volumes(images or cfg.images)
    reports = read_reports(cfg)
    report_rows = reports.to_dict("index") if reports is not None else {}
    stats.setdefault("skipped", [])      # the volumes left out, by id and reason (ingest_report.json)
    stats.update(found=len(volumes), missing_report=0, empty_findings=0, without_report=[],
                 csv_rows_without_volume=len(set(report_rows) - {v for v, _, _ in volumes}))
    rows = []
    for volume_id, path, fmt in volumes:
        row = empty_row()
        report = report_rows.get(volume_id)
        if reports is not None and report is None:
            stats["missing_report"] += 1  # kept: images without text still serve preprocessing
            stats["without_report"].append(volume_id)
        report = report or {}
        patient = report.get(cfg.patient_column, "").strip() if cfg.patient_column else ""
        row.update(volume_id=volume_id, patient_id=patient or volume_id, scan_id=volume_id, split="train",
                   image=str(path), format=fmt, source=source,
                   findings=clean_section(report.get(cfg.findings_column)),
                   impressions=clean_section(report.get(cfg.impressions_column)))
        stats["empty_findings"] += int(not row["findings"].strip())
        rows.append(row)
    log.info("folder %s: %d volumes (%d NIfTI, %d DICOM series), %d without a report row",
             images or cfg.images, len(rows), sum(f == "nifti" for _, _, f in volumes),
             sum(f == "dicom" for _, _, f in volumes), stats["missing_report"])
    return rows, stats
