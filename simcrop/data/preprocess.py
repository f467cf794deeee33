"""Preprocess CT volumes shard by shard: RAS → target spacing → HU window → int16 volume + QC record.

Per volume (manifest row):
1. load by `format` (simcrop.data.volume_io), HU = slope · stored + intercept only when `apply_rescale`
   is 1 (CT-RATE v1; v2 is HU already and is never rescaled again);
2. validate (BadVolume → quarantine): non-finite voxels, zero-length axis, impossible spacing,
   0–255 8-bit data, constant volume, implausible HU (no air; stored values HU + 1024 read as HU);
   header and DICOM slice-position checks happen in the loader (simcrop.data.volume_io);
3. reorient to RAS (flips/transposes folded into the sampling), resample to `cfg.spacing` mm (linear,
   Gaussian anti-aliasing along downsampled axes), centre crop/pad to `cfg.size`, clip to
   `cfg.hu_window`, round, int16: MONAI's Orientation → Spacing → ResizeWithPadOrCrop grid without its
   overshoot past the source; voxels outside the source = window minimum (simcrop.data.resample);
4. write `volumes/<id>.b2nd`, masks `masks/<id>.{lesion,organ}.b2nd` (nearest, same grid; the chunked
   training cache, or `.nii.gz` with `preprocess.format: nifti`, simcrop.layout) and a QC sidecar
   `qc/<id>.json`, each atomically; the sidecar is written last and marks the volume done. The volume's
   files in the other format, if any, are then removed.

A shard writes `shards/<shard>.qc.csv` and `.quarantine.csv` (simcrop.layout) only after all its volumes; a rerun
skips volumes whose outputs are newer than their inputs (and made with the same spacing, window and
size, in the configured format) and reuses their QC sidecar. Relative `image`/mask paths resolve against
the working directory.
A shard starts by deleting the temporary files a killed run of the same shard left (only its own:
other shards write into the same folders at the same time).
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from simcrop.config import PreprocessConfig
from simcrop.data.manifest import read_manifest, safe_volume_id
from simcrop.data.qc import implausible_hu, qc_stats
from simcrop.data.quarantine import QUARANTINE_COLUMNS, BadVolume, QuarantineRecord
from simcrop.data.resample import METHOD_VERSION, output_grid, resample
from simcrop.data.volume_io import input_mtime, load_nifti, load_volume
from simcrop.data.preprocessed_io import write_preprocessed
from simcrop.io import DataError, remove_stale_temp_files, write_csv_atomic, write_json_atomic
from simcrop.layout import VOLUME_FORMATS, Preprocessed, num_shards

log = logging.getLogger(__name__)

STAGE = "preprocess"
MASK_KINDS = ("lesion", "organ")
QC_COLUMNS = [
    "volume_id", "output", "lesion_output", "organ_output", "rescaled",
    "input_shape", "input_spacing", "input_orientation", "output_shape", "output_spacing",
    "hu_p1", "hu_p50", "hu_p99", "lung_air_fraction", "body_fraction", "seconds", "resumed",
]


class TooManyBadVolumes(DataError, RuntimeError):
    """More than `max_bad_fraction` of the volumes were quarantined (the files are written first)."""


def _fmt(values, digits: int | None = None) -> str:
    return "x".join(str(int(v)) if digits is None else f"{float(v):.{digits}f}" for v in values)


def _present(value) -> bool:
    return not (value is None or (isinstance(value, float) and math.isnan(value)) or str(value) == "")


def to_hu(array: np.ndarray, row) -> tuple[np.ndarray, bool]:
    """Stored values → HU: slope · x + intercept when the row says `apply_rescale` (v1), else as is.

    Integer slope/intercept keep int16 when the result fits (no float copy of a 512² × 200 volume): the
    range is checked on the stored min/max first, then slope 1 is one pass straight into int16 (the
    input's memory order). Otherwise float32, computed in place.
    """
    if not int(float(row.get("apply_rescale", 0) or 0)):
        return array, False
    slope, intercept = float(row["rescale_slope"]), float(row["rescale_intercept"])
    if slope == round(slope) and intercept == round(intercept) and array.dtype.kind in "iu" and array.size:
        s, b = int(slope), int(intercept)
        ends = (s * int(array.min()) + b, s * int(array.max()) + b)
        if -32768 <= min(ends) and max(ends) <= 32767:
            hu = np.empty_like(array, dtype=np.int16)
            if s == 1:                             # int32 arithmetic, buffered: no full-size temporary
                np.add(array, b, out=hu, dtype=np.int32, casting="unsafe")
            else:
                np.copyto(hu, array.astype(np.int32) * s + b, casting="unsafe")
            return hu, True
    hu = array.astype(np.float32)
    hu *= np.float32(slope)
    hu += np.float32(intercept)
    return hu, True


def validate(hu: np.ndarray, affine: np.ndarray, path, cfg: PreprocessConfig) -> None:
    """Raise BadVolume for what no preprocessing can repair (reasons start with a stable category);
    the last check is HU plausibility (no air, stored values HU + 1024: simcrop.data.qc.implausible_hu)."""
    if hu.ndim != 3:
        raise BadVolume(path, f"not 3-D: shape {tuple(hu.shape)}")
    if min(hu.shape) == 0:
        raise BadVolume(path, f"zero-length axis: shape {tuple(hu.shape)}")
    spacing = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    if not np.all(np.isfinite(affine)) or not np.all(np.isfinite(spacing)) \
            or spacing.min() < cfg.min_spacing_mm or spacing.max() > cfg.max_spacing_mm:
        raise BadVolume(path, f"impossible spacing: {np.round(spacing, 4).tolist()} mm outside "
                              f"[{cfg.min_spacing_mm}, {cfg.max_spacing_mm}]")
    lo, hi = float(hu.min()), float(hu.max())     # NaN or inf anywhere reaches one of them
    if hu.dtype.kind == "f" and not (math.isfinite(lo) and math.isfinite(hi)):
        bad = hu.size - int(np.count_nonzero(np.isfinite(hu)))
        raise BadVolume(path, f"non-finite voxels: {bad} NaN/inf of {hu.size}")
    if lo == hi:
        raise BadVolume(path, f"constant volume: every voxel is {lo:g}")
    if lo >= 0 and hi <= 255:
        raise BadVolume(path, f"looks like 8-bit image: values in [{lo:g}, {hi:g}], HU expected "
                              "(air is about -1000 HU)")
    problem = implausible_hu(hu)
    if problem:
        raise BadVolume(path, problem)


def _mask_dtype(mask: np.ndarray, path) -> np.ndarray:
    if mask.dtype.kind == "f":
        if not np.all(np.isfinite(mask)) or not np.array_equal(mask, np.rint(mask)):
            raise BadVolume(path, "bad mask: non-integer labels")
    lo, hi = (int(mask.min()), int(mask.max())) if mask.size else (0, 0)
    for dtype in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return mask.astype(dtype, copy=False)
    raise BadVolume(path, f"bad mask: labels out of range [{lo}, {hi}]")


def output_paths(out_dir: Path, volume_id: str, fmt: str = VOLUME_FORMATS[0]) -> dict:
    """Where one volume's outputs go in format `fmt` (preprocess.format), and (`<key>@<format>`) where the
    other formats would put them: a shard owns their temporary files too, and writing a volume removes them
    (a format change never leaves two versions). ManifestError for an id that would leave `out_dir`."""
    volume_id = safe_volume_id(volume_id)
    paths = {}
    for other in [fmt, *(f for f in VOLUME_FORMATS if f != fmt)]:
        pre, tag = Preprocessed(out_dir, other), "" if other == fmt else f"@{other}"
        paths.update({f"image{tag}": pre.volume(volume_id),
                      **{f"{kind}{tag}": pre.mask(volume_id, kind) for kind in MASK_KINDS}})
    paths["qc"] = Preprocessed(out_dir).qc_record(volume_id)
    return paths


def preprocess_volume(row, out_dir: Path, cfg: PreprocessConfig) -> dict:
    """Preprocess one manifest row; returns its QC record. Raises BadVolume for an unusable input."""
    start = time.perf_counter()
    path, volume_id = row["image"], str(row["volume_id"])
    spacing = None
    if all(_present(row.get(f"spacing_{a}")) for a in "xyz"):
        spacing = [float(row[f"spacing_{a}"]) for a in "xyz"]
    volume = load_volume(path, row["format"], spacing=spacing,
                         spacing_source=str(row.get("spacing_source") or "header"))
    hu, rescaled = to_hu(volume.array, row)
    validate(hu, volume.affine, path, cfg)

    masks = {}
    for kind in MASK_KINDS:
        mask_path = row.get(f"{kind}_mask")
        if _present(mask_path):
            mask = load_nifti(mask_path).array
            if mask.shape != hu.shape:
                raise BadVolume(mask_path, f"mask mismatch: shape {mask.shape} != image {hu.shape}")
            masks[kind] = _mask_dtype(mask, mask_path)

    image, out_shape, out_affine = to_output_grid(hu, volume.affine, cfg)

    paths = output_paths(out_dir, volume_id, cfg.format)
    written = []
    try:
        for kind, mask in masks.items():
            mask_out = resample(mask, volume.affine, out_shape, out_affine, nearest=True, fill=0)
            write_preprocessed(paths[kind], mask_out, out_affine, cfg.compress_level, codec=cfg.cache_codec,
                               source=str(row.get(f"{kind}_mask")))
            written.append(paths[kind])
        write_preprocessed(paths["image"], image, out_affine, cfg.compress_level, source=str(path),
                           codec=cfg.cache_codec)
        written.append(paths["image"])
        record = {
            "volume_id": volume_id, "output": str(paths["image"]),
            "lesion_output": str(paths["lesion"]) if "lesion" in masks else "",
            "organ_output": str(paths["organ"]) if "organ" in masks else "",
            "rescaled": int(rescaled),
            "input_shape": _fmt(volume.array.shape), "input_spacing": _fmt(volume.spacing, 4),
            "input_orientation": volume.orientation,
            "output_shape": _fmt(out_shape), "output_spacing": _fmt(np.diag(out_affine)[:3], 4),
            **qc_stats(image),                      # HU percentiles, lung-air and body fractions
            "seconds": round(time.perf_counter() - start, 3), "resumed": 0,
        }
        write_json_atomic(paths["qc"], {**record, "params": _params(cfg)})
    except BaseException:
        for done in written:                 # all or nothing per volume
            done.unlink(missing_ok=True)
        raise
    for key, stale in paths.items():         # this volume in another format (preprocess.format changed)
        if "@" in key:
            stale.unlink(missing_ok=True)
    return record


def to_output_grid(hu: np.ndarray, affine: np.ndarray, cfg: PreprocessConfig):
    """HU (X, Y, Z) with its RAS affine → (int16 image on the target grid, C-contiguous, shape, affine):
    resample to `cfg.spacing` (linear, Gaussian anti-aliasing along downsampled axes), centre crop/pad
    to `cfg.size`, clip to the window, round. Every voxel outside the source (crop/pad padding included)
    is the window minimum (air with the default window), never an edge copy (simcrop.data.resample).
    The one place the training grid is made (preprocessing and `simcrop heatmap` both call it)."""
    size = None if cfg.size is None else [int(s) for s in cfg.size]
    out_shape, out_affine = output_grid(hu.shape, affine, cfg.spacing, size)
    lo, hi = (float(v) for v in cfg.hu_window)
    image = resample(hu, affine, out_shape, out_affine, fill=lo)   # float32, the input's memory order
    np.clip(image, lo, hi, out=image)
    np.rint(image, out=image)
    # whole numbers in int16 range: the cast is exact; cast first (memory order kept), then reorder the
    # half-size int16 copy to C order (cheaper than a transposing float32 → int16 copy)
    return np.ascontiguousarray(image.astype(np.int16)), out_shape, out_affine


def _params(cfg: PreprocessConfig) -> dict:
    """The settings an output depends on: a sidecar made with others (or by an older resampling method)
    does not count as done."""
    return {"spacing": [float(v) for v in cfg.spacing], "hu_window": [float(v) for v in cfg.hu_window],
            "size": None if cfg.size is None else [int(v) for v in cfg.size], "method": METHOD_VERSION}


def _resumable(row, out_dir: Path, cfg: PreprocessConfig) -> dict | None:
    """The previous QC record when this volume's outputs exist, are newer than its inputs and were made
    with the same settings."""
    paths = output_paths(out_dir, str(row["volume_id"]), cfg.format)
    needed = [paths["image"], paths["qc"]] + [paths[k] for k in MASK_KINDS if _present(row.get(f"{k}_mask"))]
    try:
        newest_input = max([input_mtime(row["image"])] + [input_mtime(row[f"{k}_mask"]) for k in MASK_KINDS
                                                           if _present(row.get(f"{k}_mask"))])
        if not all(p.exists() and p.stat().st_mtime >= newest_input for p in needed):
            return None
        record = json.loads(paths["qc"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.pop("params", None) != _params(cfg):
        return None
    if Path(str(record.get("output", ""))).name != paths["image"].name:   # written in another format
        return None
    record.update(resumed=1, seconds=0.0)
    return record


def preprocess_shard(manifest_path, shard: int, out_dir: Path, cfg: PreprocessConfig,
                     progress: bool = True) -> dict:
    """Preprocess manifest rows [shard · shard_size, (shard + 1) · shard_size) into `out_dir`.

    Writes `shards/<shard>.qc.csv` and `shards/<shard>.quarantine.csv` (both always, after the
    whole shard). Returns counts and the two paths.
    """
    out_dir = Path(out_dir)
    frame = read_manifest(manifest_path)
    n_total = num_shards(len(frame), cfg.shard_size)
    if not 0 <= shard < n_total:
        raise ValueError(f"shard {shard} out of range: {len(frame)} rows make {n_total} shard(s) "
                         f"of {cfg.shard_size}")
    rows = frame.iloc[shard * cfg.shard_size:(shard + 1) * cfg.shard_size].to_dict("records")
    pre = Preprocessed(out_dir)
    qc_path, quarantine_path = pre.shard_qc(shard), pre.shard_quarantine(shard)
    _remove_own_temp_files(out_dir, rows, [qc_path, quarantine_path])
    records, quarantined = [], []
    for row in tqdm(rows, desc=f"preprocess shard {shard}", unit="vol", disable=not progress):
        record = _resumable(row, out_dir, cfg)
        if record is None:
            try:
                record = preprocess_volume(row, out_dir, cfg)
            except BadVolume as err:
                quarantined.append(QuarantineRecord(str(row["volume_id"]), str(row["image"]), STAGE,
                                                    err.reason).as_row())
                continue
        records.append(record)
    write_csv_atomic(quarantine_path, pd.DataFrame(quarantined, columns=QUARANTINE_COLUMNS))
    write_csv_atomic(qc_path, pd.DataFrame(records, columns=QC_COLUMNS))
    return {"shard": shard, "rows": len(rows), "ok": len(records), "bad": len(quarantined),
            "resumed": sum(int(r["resumed"]) for r in records),
            "qc": str(qc_path), "quarantine": str(quarantine_path)}


def _remove_own_temp_files(out_dir: Path, rows, shard_files) -> None:
    """Delete temporary files a killed run of this shard left: only those of its own volumes and tables,
    because the other shards of the same manifest write into the same folders at the same time."""
    owned: dict[Path, set[str]] = {}
    paths = [p for row in rows for p in output_paths(out_dir, str(row["volume_id"])).values()]
    for path in [*paths, *map(Path, shard_files)]:
        owned.setdefault(path.parent, set()).add(path.name)
    removed = [p for folder, names in owned.items() for p in remove_stale_temp_files(folder, names)]
    if removed:
        log.info("removed %d temporary file(s) a killed run left, e.g. %s", len(removed), removed[0])


def reason_category(reason: str) -> str:
    return str(reason).split(":", 1)[0].strip()


def gather_shards(qc_files, quarantine_files, qc_out, quarantine_out, summary_out,
                  max_bad_fraction: float) -> dict:
    """Concatenate shard outputs into `qc.csv`, `quarantine.csv` and `preprocess_summary.json`.

    Raises TooManyBadVolumes (after writing the three files) when the quarantined share of volumes
    exceeds `max_bad_fraction`.
    """
    def concat(files, columns):
        frames = [pd.read_csv(f, dtype={"volume_id": str}, keep_default_na=False) for f in files]
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)

    qc_files, quarantine_files = list(qc_files), list(quarantine_files)
    for out in map(Path, (qc_out, quarantine_out, summary_out)):
        remove_stale_temp_files(out.parent, [out.name])      # a killed gather's; nobody else writes these
    qc = concat(qc_files, QC_COLUMNS)
    quarantine = concat(quarantine_files, QUARANTINE_COLUMNS)
    n_ok, n_bad = len(qc), len(quarantine)
    total = n_ok + n_bad
    bad_fraction = n_bad / total if total else 0.0
    summary = {
        "volumes": total, "ok": n_ok, "quarantined": n_bad, "resumed": int(qc["resumed"].astype(int).sum()),
        "bad_fraction": bad_fraction, "max_bad_fraction": max_bad_fraction,
        "reasons": dict(Counter(reason_category(r) for r in quarantine["reason"])),
        "shards": len(qc_files),
    }
    write_csv_atomic(qc_out, qc)
    write_csv_atomic(quarantine_out, quarantine)
    write_json_atomic(summary_out, summary)
    print(f"preprocess: {n_ok} volumes ok, {n_bad} quarantined ({bad_fraction:.1%}) of {total}"
          + (f"; reasons {summary['reasons']}" if n_bad else ""))
    if bad_fraction > max_bad_fraction:
        raise TooManyBadVolumes(
            f"{n_bad} of {total} volumes quarantined ({bad_fraction:.1%}) > max_bad_fraction "
            f"{max_bad_fraction:.1%}; see {quarantine_out} for each volume and its reason (fix or remove "
            "those inputs, or raise preprocess.max_bad_fraction)")
    return summary
