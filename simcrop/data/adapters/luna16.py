"""LUNA16 adapter: `subset*/<seriesuid>.mhd` + `.raw`, `annotations.csv`, `seg-lungs-LUNA16/` → manifest rows.

On-disk convention (`root`, the layout of the public download):
- `subset0/ … subset9/<seriesuid>.mhd` with the data file the header's `ElementDataFile` names (`.raw`);
  HU, geometry in the header (format `mhd`, read by SimpleITK).
- `annotations.csv`: `seriesuid, coordX, coordY, coordZ, diameter_mm` (world mm); label
  `{"nodule": 1}` when the scan has at least one row, else 0. The coordinates are not needed here.
- `seg-lungs-LUNA16/<seriesuid>.mhd` (optional): lung masks with values LUNA16_SOURCE_VALUES
  (3 left lung, 4 right lung, 5 trachea: an unverified assumption, overridable). Preprocessing reads masks
  as NIfTI on the image grid, so the adapter writes each remapped mask once to
  `mask_dir/<seriesuid>.organ.nii.gz` (values LUNA16_ORGANS: 1 left lung, 2 right lung, 3 trachea, else 0)
  and points `organ_mask` there; a mask newer than its source is reused.

Splits: scans in `test_subsets` → `test`, the rest `train` (ingest holds out `val` per patient). LUNA16 has
no patient ids beyond the series: each series is its own patient.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from simcrop.data.downstream_labels import LUNA16_ORGANS, LUNA16_SOURCE_VALUES
from simcrop.data.manifest import empty_row
from simcrop.data.volume_io import itk_affine, write_nifti
from simcrop.io import DataError, read_csv

log = logging.getLogger(__name__)

ANNOTATION_COLUMNS = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
MASK_FOLDER = "seg-lungs-LUNA16"


def mhd_data_file(path: Path) -> Path:
    """The data file a MetaImage header names; ValueError when the header or the file is missing."""
    fields = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            fields[key.strip()] = value.strip()
    name = fields.get("ElementDataFile")
    if not name:
        raise ValueError(f"{path}: MetaImage header without ElementDataFile")
    if name == "LOCAL":
        return path
    data = path.parent / name
    if not data.is_file():
        raise ValueError(f"{path}: data file {data.name} (ElementDataFile) not found beside the header")
    return data


def read_annotations(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: LUNA16 annotations CSV not found")
    frame = read_csv(path, "LUNA16 annotations CSV", dtype={"seriesuid": str})
    missing = [c for c in ANNOTATION_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing required columns {missing} (has {list(frame.columns)})")
    return frame


def remap_mask(source: Path, image: Path, out: Path, values: dict[int, str]) -> None:
    """seg-lungs mask (.mhd) → NIfTI of LUNA16_ORGANS values on the image grid, (X, Y, Z) with RAS affine."""
    import SimpleITK as sitk

    mhd_data_file(source)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(image))
    reader.ReadImageInformation()
    mask = sitk.ReadImage(str(source))
    if tuple(mask.GetSize()) != tuple(reader.GetSize()):
        raise ValueError(f"{source}: mask size {mask.GetSize()} != image size {reader.GetSize()} ({image})")
    array = sitk.GetArrayFromImage(mask).transpose(2, 1, 0)          # (Z, Y, X) → (X, Y, Z)
    table = np.zeros(max(int(array.max()), max(values)) + 1, dtype=np.uint8)
    for value, organ in values.items():
        table[value] = LUNA16_ORGANS[organ]
    remapped = table[np.clip(array, 0, None).astype(np.int64)]
    write_nifti(out, remapped, itk_affine(mask.GetSpacing(), mask.GetOrigin(), mask.GetDirection()))


def read_luna16(root: str | Path, mask_dir: str | Path | None = None, test_subsets=("subset9",),
                annotations: str = "annotations.csv", mask_values: dict[int, str] = LUNA16_SOURCE_VALUES,
                source: str = "luna16") -> tuple[list[dict], dict]:
    """Walk a LUNA16 folder → (manifest rows, ingest statistics). Without `mask_dir`, masks are not used."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: LUNA16 root not found")
    table = read_annotations(root / annotations)
    nodules = table["seriesuid"].str.strip().value_counts().to_dict()
    files = sorted(p for p in root.glob("subset*/*.mhd") if not p.name.startswith("."))   # not hidden/temp
    if not files:
        raise ValueError(f"{root}: no subset*/<seriesuid>.mhd found")
    stats = dict(found=len(files), with_nodule=0, nodule_annotations=len(table), masks_found=0,
                 masks_written=0, missing_mask=0, annotations_without_scan=0,
                 mask_values={str(k): v for k, v in mask_values.items()}, organ_labels=LUNA16_ORGANS,
                 skipped=[])                                      # LUNA16 keeps every scan
    rows = []
    for path in files:
        mhd_data_file(path)
        uid = path.stem
        has_nodule = int(nodules.get(uid, 0) > 0)
        stats["with_nodule"] += has_nodule
        row = empty_row()
        row.update(volume_id=uid, patient_id=uid, scan_id=uid,
                   split="test" if path.parent.name in test_subsets else "train",
                   image=str(path), format="mhd", source=source, labels=json.dumps({"nodule": has_nodule}))
        mask = root / MASK_FOLDER / f"{uid}.mhd"
        if mask.is_file():
            stats["masks_found"] += 1
            if mask_dir is not None:
                out = Path(mask_dir) / f"{uid}.organ.nii.gz"
                if not (out.is_file() and out.stat().st_mtime >= mask.stat().st_mtime):
                    remap_mask(mask, path, out, mask_values)
                    stats["masks_written"] += 1
                row["organ_mask"] = str(out)
        else:
            stats["missing_mask"] += 1
        rows.append(row)
    stats["annotations_without_scan"] = len(set(nodules) - {p.stem for p in files})
    if stats["masks_found"] and mask_dir is None:
        log.warning("%s: %d lung masks found but no mask_dir given: organ_mask left empty",
                    root, stats["masks_found"])
    log.info("LUNA16 %s: %d scans, %d with a nodule, %d lung masks (%d written)", root, len(rows),
             stats["with_nodule"], stats["masks_found"], stats["masks_written"])
    return rows, stats
