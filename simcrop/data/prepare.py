"""One call from a dataset folder to preprocessed volumes: ingest -> every preprocess shard -> gather.

The Snakemake data rules run these steps as separate jobs (one per shard) for the pre-training corpus;
downstream evaluation sets are prepared by this one function in one job, which stays resumable
because each shard skips the volumes it has already written.
"""
from __future__ import annotations

import logging

from simcrop.config import DataConfig, PreprocessConfig
from simcrop.data.ingest import ingest
from simcrop.data.manifest import count_rows
from simcrop.data.preprocess import gather_shards, preprocess_shard
from simcrop.layout import DataDir, num_shards

log = logging.getLogger(__name__)


def prepare_dataset(data: DataConfig, preprocess: PreprocessConfig, out_dir, progress: bool = True) -> dict:
    """Write manifest.csv, ingest_report.json, preprocessed/, qc.csv, quarantine.csv and
    preprocess_summary.json under out_dir; returns {"ingest": ..., "preprocess": ...}."""
    folder = DataDir(out_dir)
    ingested = ingest(data, folder.manifest, folder.ingest_report)
    n_shards = num_shards(count_rows(folder.manifest), preprocess.shard_size)
    qc_files, quarantine_files = [], []
    for shard in range(n_shards):
        done = preprocess_shard(folder.manifest, shard, folder.preprocessed.root, preprocess, progress=progress)
        log.info("%s shard %d/%d: %d ok, %d quarantined", data.dataset, shard + 1, n_shards, done["ok"], done["bad"])
        qc_files.append(folder.preprocessed.shard_qc(shard))
        quarantine_files.append(folder.preprocessed.shard_quarantine(shard))
    gathered = gather_shards(qc_files, quarantine_files, folder.qc, folder.quarantine, folder.preprocess_summary,
                             preprocess.max_bad_fraction)
    return {"ingest": ingested, "preprocess": gathered}
