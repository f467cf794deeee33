"""One call from a dataset folder to preprocessed volumes: ingest -> every preprocess shard -> gather.

The Snakemake data rules run these steps as separate jobs (one per shard) for the pre-training corpus;
downstream evaluation sets are prepared by this one function in one job, which stays resumable
because each shard skips the volumes it has already written.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

from simcrop.config import DataConfig, PreprocessConfig
from simcrop.data.ingest import ingest
from simcrop.data.manifest import count_rows
from simcrop.data.preprocess import gather_shards, preprocess_shard

log = logging.getLogger(__name__)


def prepare_dataset(data: DataConfig, preprocess: PreprocessConfig, out_dir, progress: bool = True) -> dict:
    """Write manifest.csv, ingest_report.json, preprocessed/, qc.csv, quarantine.csv and
    preprocess_summary.json under out_dir; returns {"ingest": ..., "preprocess": ...}."""
    out_dir = Path(out_dir)
    manifest = out_dir / "manifest.csv"
    ingested = ingest(data, manifest, out_dir / "ingest_report.json")
    n_shards = math.ceil(count_rows(manifest) / preprocess.shard_size)
    qc_files, quarantine_files = [], []
    for shard in range(n_shards):
        done = preprocess_shard(manifest, shard, out_dir / "preprocessed", preprocess, progress=progress)
        log.info("%s shard %d/%d: %d ok, %d quarantined", data.dataset, shard + 1, n_shards, done["ok"], done["bad"])
        qc_files.append(Path(done["qc"]))
        quarantine_files.append(Path(done["quarantine"]))
    gathered = gather_shards(qc_files, quarantine_files, out_dir / "qc.csv", out_dir / "quarantine.csv",
                             out_dir / "preprocess_summary.json", preprocess.max_bad_fraction)
    return {"ingest": ingested, "preprocess": gathered}
