"""Every path of a run folder, in one place: the CLI, the Snakemake rules and every module ask here.

    <results_dir>/<run>/                      Run (a DataDir: the pre-training corpus lives in the run itself)
      manifest.csv  ingest_report.json  sentences.jsonl  sentences_quarantine.csv
      qc.csv  quarantine.csv  preprocess_summary.json
      preprocessed/volumes/<id>.nii.gz        Preprocessed
      preprocessed/masks/<id>.<kind>.nii.gz   kind: lesion | organ
      preprocessed/shards/<00000>.qc.csv      one QC and one quarantine table per preprocess shard
      downstream/<name>/                      a DataDir per downstream evaluation set
      pretrain/<row>/encoder.pt  metrics.json  checkpoints/last.pt  dvclive/
      evaluate/<row>/<task>/<dataset>/<name>.json   probe | segment, name: a data-fraction percent or "all"
      evaluate/<row>/<task>.json              zeroshot | retrieval | grounding
      report/  figures/montage.png  logs/  benchmarks/  cache/features/

Paths are built from strings, so Snakemake wildcards ("{objective}") pass through unchanged.
"""
from __future__ import annotations

import math
from pathlib import Path

SHARD_DIGITS = 5                  # shard file names sort in numeric order up to 99,999 shards
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
ENCODER = "encoder.pt"
DVCLIVE = "dvclive"


def num_shards(n_rows: int, shard_size: int) -> int:
    """How many preprocess shards a manifest of `n_rows` makes (at least one, so an empty run still gathers)."""
    if shard_size < 1:
        raise ValueError(f"preprocess.shard_size must be >= 1, got {shard_size}")
    return max(1, math.ceil(n_rows / shard_size))


def shard_name(shard: int | str) -> str:
    """`00007` for shard 7; a string (a Snakemake wildcard) passes through."""
    return shard if isinstance(shard, str) else f"{shard:0{SHARD_DIGITS}d}"


def shard_names(n_rows: int, shard_size: int) -> list[str]:
    return [shard_name(i) for i in range(num_shards(n_rows, shard_size))]


class Preprocessed:
    """`preprocessed/`: one int16 NIfTI per volume, its masks, and the per-shard QC tables."""

    def __init__(self, root):
        self.root = Path(root)

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    @property
    def masks(self) -> Path:
        return self.root / "masks"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    def volume(self, volume_id: str) -> Path:
        return self.volumes / f"{volume_id}.nii.gz"

    def mask(self, volume_id: str, kind: str) -> Path:
        return self.masks / f"{volume_id}.{kind}.nii.gz"

    def shard_qc(self, shard: int | str) -> Path:
        return self.shards / f"{shard_name(shard)}.qc.csv"

    def shard_quarantine(self, shard: int | str) -> Path:
        return self.shards / f"{shard_name(shard)}.quarantine.csv"

    def shard_qc_files(self) -> list[Path]:
        return sorted(self.shards.glob("*.qc.csv"))

    @staticmethod
    def quarantine_of(shard_qc: Path) -> Path:
        """The quarantine table written beside a shard's QC table."""
        shard_qc = Path(shard_qc)
        return shard_qc.with_name(shard_qc.name.replace(".qc.csv", ".quarantine.csv"))


class DataDir:
    """A folder holding one dataset's tables and its preprocessed volumes (the run, or a downstream set)."""

    def __init__(self, root):
        self.root = Path(root)

    manifest = property(lambda self: self.root / "manifest.csv")
    ingest_report = property(lambda self: self.root / "ingest_report.json")
    sentences = property(lambda self: self.root / "sentences.jsonl")
    qc = property(lambda self: self.root / "qc.csv")
    quarantine = property(lambda self: self.root / "quarantine.csv")
    preprocess_summary = property(lambda self: self.root / "preprocess_summary.json")

    @property
    def preprocessed(self) -> Preprocessed:
        return Preprocessed(self.root / "preprocessed")

    def resolved_config(self, step: str) -> Path:
        """The config a step ran with (`<step>.config.yaml`), written beside its outputs."""
        return self.root / f"{step}.config.yaml"

    def __fspath__(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"


class Run(DataDir):
    """`<results_dir>/<run>/`: the pre-training corpus, every pre-trained row, evaluations and the report."""

    def downstream(self, name: str) -> DataDir:
        return DataDir(self.root / "downstream" / name)

    # pre-training: one folder per row (objective or variant)
    def pretrain_dir(self, row: str) -> Path:
        return self.root / "pretrain" / row

    def encoder(self, row: str) -> Path:
        return self.pretrain_dir(row) / ENCODER

    def pretrain_metrics(self, row: str) -> Path:
        return self.pretrain_dir(row) / "metrics.json"

    def checkpoint(self, row: str) -> Path:
        return self.pretrain_dir(row) / CHECKPOINT_DIR / LAST_CHECKPOINT

    # evaluation
    def evaluate_dir(self, row: str) -> Path:
        return self.root / "evaluate" / row

    def evaluation(self, row: str, task: str, dataset: str | None = None, name: str | None = None) -> Path:
        """`<row>/<task>.json` for a text task; `<row>/<task>/<dataset>/<name>.json` for probe/segment."""
        if dataset is None:
            return self.evaluate_dir(row) / f"{task}.json"
        return self.evaluate_dir(row) / task / dataset / f"{name}.json"

    @property
    def feature_cache(self) -> Path:
        return self.root / "cache" / "features"

    # run-wide outputs
    report = property(lambda self: self.root / "report")
    figures = property(lambda self: self.root / "figures")
    montage = property(lambda self: self.root / "figures" / "montage.png")
    logs = property(lambda self: self.root / "logs")
    benchmarks = property(lambda self: self.root / "benchmarks")


def run_of(cfg) -> Run:
    """The run folder of a Config (`<results_dir>/<run>`)."""
    return Run(cfg.run_dir)
