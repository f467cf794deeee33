"""CC-CCII adapter: class folders of patients' scans (slice images or volumes) → manifest rows.

On-disk convention (`root`):
    {class}/{patient}/{scan}/*.png|*.jpg     one folder of axial slice images per scan (the public release)
    {class}/{patient}/{scan}.nii.gz|.nii     or one volume per scan
    {class}/{patient}/{scan}.npy|.npz        (npz: key `ct`), as in the cleaned re-releases
with class `NCP` (COVID-19 pneumonia), `CP` (common pneumonia) or `Normal` (case-insensitive). Labels are
one-hot over CCCCII_LABELS. volume_id `{class}_{patient}_{scan}`, patient `{class}_{patient}`.

What the adapter detects and records (docs/data.md: CC-CCII is often slice-first and 0–255):
- slice-first: a stack whose first axis is the slice axis, (Z, Y, X); detected by `is_slice_first`
  (last two axes equal and the first different, else the first axis at most half the others). NIfTI
  readers would take that axis as x, so such volumes, `.npy` stacks and slice folders are written once to
  `cache_dir/<volume_id>.npz` (key `ct`, (Z, Y, X), values unchanged) and listed as format `npz`, whose
  loader reads exactly that layout. Axes are assumed LPS (image columns → patient left, rows → posterior,
  the radiological display convention); the slice direction is unknown and left as stored.
- 0–255: uint8 data or values inside [0, 255] are rendered images, not HU. Preprocessing quarantines them
  as "8-bit image"; the adapter therefore marks them `apply_rescale = 1` with `rescale_slope/intercept`
  mapping 0..255 linearly onto `window` (default lung window [-1350, 150] HU: L -600, W 1500), which the
  preprocessor already applies (pseudo-HU: structure outside the rendering window is lost).
- spacing: header zooms when they are not all 1 mm; else `default_spacing` (x, y, z) mm, an assumption
  counted in the report (`spacing_assumed`), `spacing_source = metadata`.

Splits: all `train`; ingest holds out `val` per patient (CC-CCII has no official split).
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import nibabel as nib
import numpy as np

from simcrop.data.downstream_labels import CCCCII_CLASSES, CCCCII_LABELS
from simcrop.data.manifest import empty_row
from simcrop.io import atomic_path

log = logging.getLogger(__name__)

SLICE_SUFFIXES = (".png", ".jpg", ".jpeg")
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".npy", ".npz")
LUNG_WINDOW = (-1350.0, 150.0)
DEFAULT_SPACING = (0.75, 0.75, 1.5)


def is_slice_first(shape) -> bool:
    """(Z, Y, X) rather than (X, Y, Z): the last two axes equal and the first different, else first ≪ others."""
    a, b, c = (int(s) for s in shape)
    if b == c and a != b:
        return True
    if a == b and c != a:
        return False
    return 2 * a <= min(b, c)


def is_8bit(array: np.ndarray) -> bool:
    if array.dtype == np.uint8:
        return True
    return bool(array.size) and float(array.min()) >= 0 and float(array.max()) <= 255


def _natural(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def read_slices(folder: Path) -> np.ndarray:
    """A folder of 2-D slice images → (Z, Y, X) stack (colour images averaged to grey)."""
    import SimpleITK as sitk

    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in SLICE_SUFFIXES), key=_natural)
    try:
        array = sitk.GetArrayFromImage(sitk.ReadImage([str(f) for f in files]))
    except RuntimeError as err:
        message = (str(err).strip().splitlines() or [""])[-1]
        raise ValueError(f"{folder}: slice images unreadable as one stack ({message})") from err
    if array.ndim == 4:                                # (Z, Y, X, channels)
        array = array[..., :3].mean(axis=-1).round().astype(np.uint8)
    return array


def find_scans(root: Path) -> list[tuple[str, str, str, Path]]:
    """(class folder, patient, scan, path) for every slice folder or volume file under the class folders."""
    classes = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    # hidden entries (a killed writer's `.<name>.<random>.tmp.npz`, macOS `._` files) are not scans
    found = []
    for name in CCCCII_CLASSES:
        class_dir = classes.get(name.lower())
        if class_dir is None:
            log.warning("%s: no %s/ class folder", root, name)
            continue
        for patient in sorted(p for p in class_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for entry in sorted(p for p in patient.iterdir() if not p.name.startswith(".")):
                if entry.is_dir() and any(p.suffix.lower() in SLICE_SUFFIXES for p in entry.iterdir()):
                    found.append((name, patient.name, entry.name, entry))
                elif entry.is_file() and entry.name.endswith(VOLUME_SUFFIXES):
                    scan = next(entry.name[: -len(s)] for s in VOLUME_SUFFIXES if entry.name.endswith(s))
                    found.append((name, patient.name, scan, entry))
    if not found:
        raise ValueError(f"{root}: no CC-CCII scans (expected {list(CCCCII_CLASSES)}/<patient>/<scan> "
                         f"slice folders or {VOLUME_SUFFIXES} files)")
    return found


def load_scan(path: Path) -> tuple[np.ndarray, tuple | None, bool, str]:
    """(array, header zooms or None, stored as a (Z, Y, X) stack?, how it was read)."""
    if path.is_dir():
        return read_slices(path), None, True, "slices"
    if path.name.endswith(".npz"):
        with np.load(path) as data:
            if "ct" not in data.files:
                raise ValueError(f"{path}: npz has no 'ct' array (keys {sorted(data.files)})")
            return data["ct"], None, True, "npz"
    if path.suffix == ".npy":
        array = np.load(path)
        return array, None, array.ndim == 3 and is_slice_first(array.shape), "npy"
    try:
        image = nib.load(str(path))
        array = np.asanyarray(image.dataobj)
    except Exception as err:                         # a corrupt file fails in any of nibabel's layers
        raise ValueError(f"{path}: unreadable NIfTI ({type(err).__name__}: {err})") from err
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    return array, zooms, array.ndim == 3 and is_slice_first(array.shape), "nifti"


def _write_npz(path: Path, stack: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, ct=stack)


def read_ccccii(root: str | Path, cache_dir: str | Path | None = None, window=LUNG_WINDOW,
                default_spacing=DEFAULT_SPACING, source: str = "ccccii") -> tuple[list[dict], dict]:
    """Walk a CC-CCII folder → (manifest rows with split `train`, ingest statistics).

    `cache_dir` receives the (Z, Y, X) `.npz` stacks of slice-first volumes and slice folders; without it
    such scans are skipped (counted as `skipped_no_cache_dir`).
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: CC-CCII root not found")
    scans = find_scans(root)
    lo, hi = (float(v) for v in window)
    stats = dict(found=len(scans), per_class={}, slice_first=0, eight_bit=0, spacing_assumed=0, converted=0,
                 skipped_no_cache_dir=0, eight_bit_window_hu=[lo, hi], slice_first_volumes=[],
                 eight_bit_volumes=[], skipped=[])
    rows = []
    for class_name, patient, scan, path in scans:
        volume_id = f"{class_name}_{patient}_{scan}"
        array, zooms, stack, how = load_scan(path)
        if array.ndim != 3:
            raise ValueError(f"{path}: CC-CCII scan is not 3-D (shape {tuple(array.shape)})")
        row = empty_row()
        if stack and how != "npz":           # needs the (Z, Y, X) npz layout the loader understands
            if cache_dir is None:
                stats["skipped_no_cache_dir"] += 1
                stats["skipped"].append(dict(volume_id=volume_id, path=str(path), reason="no_cache_dir: a "
                                             "slice-first stack must be rewritten as .npz and no cache_dir was given"))
                continue
            image = Path(cache_dir) / f"{volume_id}.npz"
            if not (image.is_file() and image.stat().st_mtime >= path.stat().st_mtime):
                _write_npz(image, np.ascontiguousarray(array))
                stats["converted"] += 1
            fmt = "npz"
        else:
            image, fmt = path, ("npz" if how == "npz" else "nifti")
        if stack:
            stats["slice_first"] += 1
            stats["slice_first_volumes"].append(volume_id)
        if zooms is not None and not np.allclose(zooms, 1.0):
            spacing = (zooms[2], zooms[1], zooms[0]) if stack else zooms
            row.update(spacing_source="metadata" if fmt == "npz" else "header")
        else:
            spacing = tuple(float(s) for s in default_spacing)
            row.update(spacing_source="metadata")
            stats["spacing_assumed"] += 1
        if fmt == "npz" or row["spacing_source"] == "metadata":
            row.update(spacing_x=spacing[0], spacing_y=spacing[1], spacing_z=spacing[2])
        if is_8bit(array):
            stats["eight_bit"] += 1
            stats["eight_bit_volumes"].append(volume_id)
            row.update(apply_rescale=1, rescale_slope=(hi - lo) / 255.0, rescale_intercept=lo)
        label = CCCCII_CLASSES[class_name]
        row.update(volume_id=volume_id, patient_id=f"{class_name}_{patient}", scan_id=volume_id, split="train",
                   image=str(image), format=fmt, source=source,
                   labels=json.dumps({name: int(name == label) for name in CCCCII_LABELS}))
        stats["per_class"][label] = stats["per_class"].get(label, 0) + 1
        rows.append(row)
    log.info("CC-CCII %s: %d scans kept of %d; %d slice-first, %d 0-255 (mapped to %s HU), %d converted "
             "to npz, %d with assumed spacing", root, len(rows), len(scans), stats["slice_first"],
             stats["eight_bit"], [lo, hi], stats["converted"], stats["spacing_assumed"])
    return rows, stats
