"""Ingest: dataset on disk → one manifest (simcrop/data/manifest.py) + a JSON report of what was found and skipped.

`cfg.dataset` picks the adapter: `ctrate` and `synthetic` (a corpus laid out like CT-RATE v2, plus lesion
ground truth) → adapters/ctrate.py; `folder` → adapters/folder.py; `radchestct`, `ccccii`, `luna16`, `btcv`
→ adapters/<name>.py (their on-disk conventions are in each module); `manifest` → a prebuilt manifest at
`cfg.root`, validated and copied. Splits are then assigned per patient (never per volume); a dataset with
its own validation split (RadChestCT's official files) keeps it and no further `val` is held out.

Files an adapter derives from the dataset (CC-CCII slice stacks as .npz, LUNA16 lung masks remapped to
NIfTI) go beside the manifest, in `<manifest folder>/<dataset>_derived/`, never into the dataset root.

The report lists every volume an adapter left out by id, with its path and reason (`skipped`: reasons
start with a stable category such as `missing_report:`), not only their counts. `input_files` names what
an adapter reads, so Snakemake reruns ingest (and what follows) when a reports or labels CSV changes.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from simcrop.config import DataConfig
from simcrop.data.adapters import radchestct
from simcrop.data.adapters.btcv import read_btcv
from simcrop.data.adapters.ccccii import read_ccccii
from simcrop.data.adapters.ctrate import add_synthetic_extras, read_ctrate, table_files
from simcrop.data.adapters.folder import read_folder
from simcrop.data.adapters.luna16 import read_luna16
from simcrop.data.adapters.radchestct import read_radchestct
from simcrop.data.manifest import SPLITS, read_manifest, write_manifest
from simcrop.data.splits import assign_splits
from simcrop.io import DataError, remove_stale_temp_files, write_json_atomic

log = logging.getLogger(__name__)


DATASETS = ("synthetic", "ctrate", "folder", "manifest", "radchestct", "ccccii", "luna16", "btcv")


def derived_dir(manifest_out: Path, dataset: str) -> Path:
    """Where an adapter writes files it derives from the dataset: beside the manifest, not in the dataset."""
    return Path(manifest_out).parent / f"{dataset}_derived"


def input_files(cfg: DataConfig) -> list[str]:
    """What the adapter `cfg.dataset` reads: its image folder or root, and the tables in or beside it.

    For Snakemake's `input:`. A folder input changes when files are added or removed; a CSV edit changes
    only the CSV, so each CSV is listed itself. Tables that do not exist are left out (the adapter says
    which ones it needs). The synthetic corpus is the synthesize rule's output and is handled there.
    """
    root = Path(cfg.root)
    if cfg.dataset == "folder":
        reports = [cfg.folder.reports_csv] if cfg.folder.reports_csv else []
        return [str(cfg.folder.images or cfg.root), *reports]
    if cfg.dataset == "manifest":
        return [str(root)]
    tables = {"ctrate": table_files(root), "synthetic": table_files(root),
              "radchestct": [root / name for name in (*radchestct.SPLIT_FILES.values(), radchestct.SINGLE_FILE)],
              "luna16": [root / "annotations.csv"], "btcv": [root / "dataset.json"]}.get(cfg.dataset, [])
    return [str(root), *(str(p) for p in tables if p.is_file())]


def split_counts(frame: pd.DataFrame) -> dict:
    return {split: {"volumes": int((frame["split"] == split).sum()),
                    "patients": int(frame.loc[frame["split"] == split, "patient_id"].nunique())}
            for split in SPLITS}


def ingest(cfg: DataConfig, manifest_out: Path, report_out: Path) -> dict:
    """Run the adapter `cfg.dataset` names, assign splits, write manifest + report atomically; return the report."""
    _remove_stale_temp_files(manifest_out, report_out, derived_dir(manifest_out, cfg.dataset))
    if cfg.dataset in ("ctrate", "synthetic"):
        rows, stats = read_ctrate(cfg.root, cfg.release, cfg.exclude_no_chest, source=cfg.dataset)
        if cfg.dataset == "synthetic":
            stats["missing_lesion_records"] = add_synthetic_extras(rows, cfg.root)
    elif cfg.dataset == "folder":
        rows, stats = read_folder(cfg.folder, images=cfg.folder.images or cfg.root)
    elif cfg.dataset == "radchestct":
        rows, stats = read_radchestct(cfg.root)
    elif cfg.dataset == "ccccii":
        rows, stats = read_ccccii(cfg.root, cache_dir=derived_dir(manifest_out, cfg.dataset))
    elif cfg.dataset == "luna16":
        rows, stats = read_luna16(cfg.root, mask_dir=derived_dir(manifest_out, cfg.dataset))
    elif cfg.dataset == "btcv":
        rows, stats = read_btcv(cfg.root)
    elif cfg.dataset == "manifest":
        frame = read_manifest(cfg.root)
        stats = dict(found=len(frame), empty_findings=int((frame["findings"].str.strip() == "").sum()), skipped=[])
        rows = frame
    else:
        raise ValueError(f"data.dataset must be one of {DATASETS}, got {cfg.dataset!r}")
    if not len(rows):
        counts = {k: v for k, v in stats.items() if not isinstance(v, (list, dict))}
        raise DataError(f"{cfg.root}: no usable volumes found for dataset {cfg.dataset!r} ({counts}; "
                        f"skipped: {stats.get('skipped', [])[:3]})")
    stats.setdefault("skipped", [])
    _log_skipped(stats["skipped"])
    stats.setdefault("release", "")
    stats.setdefault("release_detection", f"not applicable to dataset {cfg.dataset!r}")
    val_fraction = 0.0 if stats.get("official_val") else cfg.val_fraction
    if isinstance(rows, list):
        rows = assign_splits(rows, val_fraction, cfg.split_seed, cfg.test_fraction)
    frame = write_manifest(manifest_out, rows)
    report = dict(dataset=cfg.dataset, root=str(cfg.root), manifest=str(manifest_out), volumes=len(frame),
                  val_fraction=val_fraction, test_fraction=cfg.test_fraction, split_seed=cfg.split_seed, splits=split_counts(frame), **stats)
    write_json_atomic(report_out, report)
    log.info("manifest %s: %d volumes, splits %s", manifest_out, len(frame),
             {s: c["volumes"] for s, c in report["splits"].items()})
    return report


def _remove_stale_temp_files(manifest_out: Path, report_out: Path, derived: Path) -> None:
    """Temporary files a killed ingest left: of its two outputs (other jobs write beside them) and all of
    the derived folder's (only this job writes there)."""
    for out in map(Path, (manifest_out, report_out)):
        remove_stale_temp_files(out.parent, [out.name])
    remove_stale_temp_files(derived)


def _log_skipped(skipped: list[dict]) -> None:
    if skipped:
        shown = ", ".join(f"{s['volume_id']} ({s['reason'].split(':', 1)[0]})" for s in skipped[:5])
        log.warning("%d volume(s) skipped, e.g. %s; ingest_report.json `skipped` lists each with its reason",
                    len(skipped), shown)
