"""Generic adapter: a folder of NIfTI files and/or DICOM series folders, plus an optional reports CSV.

volume_id is the file stem (`case1.nii.gz` → `case1`) or the series folder name; every volume is its own
patient and scan unless the CSV has a patient column. Spacing comes from the image header.
Rows come out with the provisional split `train`; `simcrop.data.ingest` holds out `val` per patient.

Hidden files and folders (names starting with ".", such as the temporary files of atomic writes,
`.<id>.nii.gz.<random>.tmp.nii.gz`) are never volumes.

A folder holding several DICOM series gives one volume, named after the folder: its chest CT series,
chosen by `simcrop.data.volume_io.choose_series` (the same rule the loader applies): among the CT
series that are not localizers/scouts and have at least 3 images, one whose BodyPartExamined or
SeriesDescription names the chest (chest, thorax, lung) first, then the most images, then the lowest
series UID. Each other series is listed in the statistics' `skipped` (`ignored series: ...`), and a
folder with no such series is skipped whole (`no CT series: ...`); `multi_series_folders` counts them.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from simcrop.config import FolderAdapterConfig
from simcrop.data.adapters.ctrate import clean_section, first_of_duplicates, volume_key
from simcrop.data.manifest import empty_row
from simcrop.data.volume_io import choose_series, dicom_series
from simcrop.io import DataError, read_csv

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def dicom_series_ids(folder: str | Path) -> tuple[str, ...]:
    """Series instance UIDs of the DICOM files directly inside `folder` (GDCM, as SimpleITK reads them)."""
    import SimpleITK as sitk

    return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ())


def _choose_dicom_series(here: Path, stats: dict) -> bool:
    """Whether the multi-series folder `here` gives a volume; records the ignored series in `stats`."""
    chosen, ignored = choose_series(dicom_series(here))
    stats["multi_series_folders"] += 1
    if chosen is None:
        why = "no CT series: " + "; ".join(s.describe() for s in ignored)
        stats["skipped"].append(dict(volume_id=here.name, path=str(here), reason=why))
        log.warning("%s: %s; skipped", here, why)
        return False
    for series in ignored:
        stats["skipped"].append(dict(volume_id=here.name, path=str(here), reason=(
            f"ignored series: {series.describe()}; the folder's volume is series {chosen.uid}")))
    log.warning("%s holds %d DICOM series; kept %s, ignored %s (chest CT series rule, see "
                "simcrop.data.adapters.folder)", here, len(ignored) + 1, chosen.describe(),
                "; ".join(s.describe() for s in ignored))
    return True


def find_volumes(images: str | Path) -> tuple[list[tuple[str, Path, str]], dict]:
    """(volume_id, path, format) for every NIfTI file and DICOM series folder under `images`; a folder of
    several series gives its chest CT series (module docstring), the others are listed as skipped."""
    images = Path(images)
    if not images.is_dir():
        raise ValueError(f"{images}: image folder not found")
    found: list[tuple[str, Path, str]] = []
    stats = dict(multi_series_folders=0, skipped=[])
    for dirpath, dirnames, filenames in os.walk(images, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        filenames = [f for f in filenames if not f.startswith(".")]     # hidden, and our temporary files
        here = Path(dirpath)
        nifti = sorted(f for f in filenames if f.endswith(NIFTI_SUFFIXES))
        found += [(volume_key(f), here / f, "nifti") for f in nifti]
        others = [f for f in filenames if f not in nifti]
        if not others:
            continue
        series = dicom_series_ids(here)
        if len(series) == 1 or (len(series) > 1 and _choose_dicom_series(here, stats)):
            found.append((here.name, here, "dicom"))
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
