"""RadChestCT adapter: `<NoteAcc_DEID>.npz` volumes + abnormality-by-location label CSVs → manifest rows.

On-disk convention (`root`):
- volumes: `*.npz` anywhere under `root` (searched recursively), one per scan, named `<NoteAcc_DEID>.npz`,
  key `ct`: int16 HU slice stack (Z, Y, X) in DICOM (LPS) axis order, about 0.8 mm isotropic (the manifest
  spacing, `spacing_source = metadata`, as simcrop.data.volume_io.load_npz expects). An optional `affine`
  key (4 x 4 RAS) overrides the geometry; its column norms then fill the manifest spacing.
- labels, official split: `imgtrain_Abnormality_and_Location_Labels.csv`, `imgvalid_…`, `imgtest_…`
  directly under `root` (2,286 / 984 / 360 scans) → splits `train` / `val` / `test`.
  Fallback: a single `labels.csv` with an optional `split` column (`train`, `valid`/`val`, `test`);
  without it every scan is `train` and ingest holds out `val` per patient.
- each CSV: `NoteAcc_DEID` + `<abnormality>*<location>` 0/1 columns; a SimCroP label is the OR over the
  RadChestCT abnormalities mapped to it (simcrop.data.downstream_labels, an assumption) and all locations.

RadChestCT publishes no patient ids: every scan is its own patient (the official split is patient-disjoint).
"""
from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from simcrop.data.adapters.ctrate import first_of_duplicates
from simcrop.data.downstream_labels import RADCHESTCT_ABNORMALITIES
from simcrop.data.manifest import empty_row
from simcrop.io import DataError, read_csv

log = logging.getLogger(__name__)

ID_COLUMN = "NoteAcc_DEID"
SPLIT_FILES = {"train": "imgtrain_Abnormality_and_Location_Labels.csv",
               "val": "imgvalid_Abnormality_and_Location_Labels.csv",
               "test": "imgtest_Abnormality_and_Location_Labels.csv"}
SINGLE_FILE = "labels.csv"
SPLIT_VALUES = {"train": "train", "valid": "val", "val": "val", "validation": "val", "test": "test"}
SPACING_MM = (0.8, 0.8, 0.8)


def read_label_table(path: Path, abnormalities: dict) -> pd.DataFrame:
    """One labels CSV → frame indexed by NoteAcc_DEID with one 0/1 column per SimCroP label (+ `split`)."""
    frame = read_csv(path, "RadChestCT labels CSV", dtype=str, keep_default_na=False)
    if ID_COLUMN not in frame.columns:
        raise DataError(f"{path}: missing required column {ID_COLUMN!r} (has {list(frame.columns)[:8]}...)")
    by_abnormality: dict[str, list[str]] = {}
    for column in frame.columns:
        by_abnormality.setdefault(column.split("*", 1)[0].strip(), []).append(column)
    out = pd.DataFrame(index=frame[ID_COLUMN].str.strip())
    for label, names in abnormalities.items():
        columns = [c for name in names for c in by_abnormality.get(name, [])]
        if not columns:
            raise ValueError(f"{path}: no column for label {label!r}: expected '<abnormality>*<location>' "
                             f"columns for any of {list(names)} (simcrop.data.downstream_labels."
                             "RADCHESTCT_ABNORMALITIES is an assumed mapping; pass abnormalities=...)")
        try:
            values = frame[columns].replace("", "0").astype(float).to_numpy()
        except ValueError as err:
            raise ValueError(f"{path}: non-numeric value in the columns of {label!r} ({err})") from err
        out[label] = (values > 0).any(axis=1).astype(int)
    if "split" in frame.columns:
        out["split"] = frame["split"].str.strip().str.lower().to_numpy()
    return first_of_duplicates(out, path, ID_COLUMN)


def read_labels(root: Path, abnormalities: dict) -> tuple[dict[str, tuple[str, dict]], str]:
    """{NoteAcc_DEID: (split, {label: 0/1})} and a sentence saying where the split came from."""
    official = {split: root / name for split, name in SPLIT_FILES.items() if (root / name).is_file()}
    labels: dict[str, tuple[str, dict]] = {}
    if official:
        for split, path in official.items():
            table = read_label_table(path, abnormalities)
            for key, values in table[list(abnormalities)].iterrows():
                labels.setdefault(key, (split, values.to_dict()))
        return labels, "official split files " + ", ".join(p.name for p in official.values())
    path = root / SINGLE_FILE
    if not path.is_file():
        raise ValueError(f"{root}: no RadChestCT labels CSV (expected {list(SPLIT_FILES.values())} "
                         f"or {SINGLE_FILE})")
    table = read_label_table(path, abnormalities)
    for key, row in table.iterrows():
        raw = row.get("split", "train") or "train"
        if raw not in SPLIT_VALUES:
            raise ValueError(f"{path}: row {key!r} has split {raw!r}; expected one of {sorted(SPLIT_VALUES)}")
        labels[key] = (SPLIT_VALUES[raw], {name: int(row[name]) for name in abnormalities})
    how = f"{SINGLE_FILE} split column" if "split" in table.columns else "patient-level hold-out (no split given)"
    return labels, how


def npz_spacing(path: Path, default=SPACING_MM) -> tuple[float, float, float]:
    """Check `path` holds a 3-D `ct` array (reading only the zip directory and array headers);
    spacing (x, y, z) mm from its `affine` key when present, else `default`."""
    try:
        with np.load(path) as data:
            if "ct" not in data.files:
                raise ValueError(f"{path}: npz has no 'ct' array (keys {sorted(data.files)}); "
                                 "RadChestCT volumes store the CT under key 'ct'")
            with zipfile.ZipFile(path) as archive, archive.open("ct.npy") as handle:
                version = np.lib.format.read_magic(handle)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape = read_header(handle)[0]
            if len(shape) != 3:
                raise ValueError(f"{path}: 'ct' is not 3-D (shape {tuple(shape)})")
            if "affine" in data.files:
                affine = np.asarray(data["affine"], dtype=np.float64)
                return tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{path}: unreadable npz ({type(err).__name__}: {err})") from err
    return tuple(float(s) for s in default)


def read_radchestct(root: str | Path, abnormalities: dict = RADCHESTCT_ABNORMALITIES,
                    spacing_mm=SPACING_MM, source: str = "radchestct") -> tuple[list[dict], dict]:
    """Walk a RadChestCT folder → (manifest rows with official or provisional splits, ingest statistics)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: RadChestCT root not found")
    labels, how = read_labels(root, abnormalities)
    # hidden files (a killed writer's `.<name>.<random>.tmp.npz`, macOS `._` files) are not volumes
    files = sorted(p for p in root.rglob("*.npz") if not p.name.startswith("."))
    stats = dict(found=len(files), missing_labels=0, csv_rows_without_volume=0, split_source=how,
                 official_val=any(split == "val" for split, _ in labels.values()), label_mapping="assumed",
                 skipped=[])
    rows = []
    on_disk = set()
    for path in files:
        key = path.name[: -len(".npz")]
        on_disk.add(key)
        if key not in labels:
            stats["missing_labels"] += 1
            stats["skipped"].append(dict(volume_id=key, path=str(path),
                                         reason=f"missing_labels: no {ID_COLUMN} row in the labels ({how})"))
            continue
        split, values = labels[key]
        sx, sy, sz = npz_spacing(path, spacing_mm)
        row = empty_row()
        row.update(volume_id=key, patient_id=key, scan_id=key, split=split, image=str(path), format="npz",
                   source=source, spacing_x=sx, spacing_y=sy, spacing_z=sz, spacing_source="metadata",
                   labels=json.dumps({name: int(v) for name, v in values.items()}))
        rows.append(row)
    stats["csv_rows_without_volume"] = len(set(labels) - on_disk)
    log.info("RadChestCT %s: %d volumes found, %d kept, %d without labels; split from %s",
             root, len(files), len(rows), stats["missing_labels"], how)
    return rows, stats
