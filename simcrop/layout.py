"""Every path of a run folder, in one place: the CLI, the Snakemake rules and every module ask here.

    <results_dir>/<run>/                      Run (a DataDir: the pre-training corpus lives in the run itself)
      manifest.csv  ingest_report.json  sentences.jsonl  sentences_quarantine.csv
      qc.csv  quarantine.csv  preprocess_summary.json
      preprocessed/volumes/<id>.b2nd          Preprocessed (preprocess.format: b2nd, the chunked training
      preprocessed/masks/<id>.<kind>.b2nd     cache; nifti: <id>.nii.gz, <id>.<kind>.nii.gz); kind: lesion | organ
      preprocessed/qc/<id>.json               a volume's QC record, written last: the volume is done
      preprocessed/shards/<00000>.qc.csv      one QC and one quarantine table per preprocess shard
      downstream/<name>/                      a DataDir per downstream evaluation set
      pretrain/<row>/encoder.pt  metrics.json  checkpoints/last.pt  dvclive/
      evaluate/<row>/<task>/<dataset>/<name>.json   probe | segment, name: a data-fraction percent, "all"
                                                    or "features" (the probe's features, before any fraction)
      evaluate/<row>/<task>.json              zeroshot | retrieval | grounding
      evaluate/<row>/grounding_figures/       heat maps beside grounding.json (figures_beside)
      report/  figures/montage.png  cache/features/
      logs/<step>/.../<job>.log  benchmarks/<rule>/.../<job>.tsv   one per Snakemake job

Paths are built from strings, so Snakemake wildcards ("{objective}") pass through unchanged.

The functions at the end list what a Config's run reads and makes (the Snakemake rules' targets and
inputs): workflow/rules/common.smk imports only simcrop.config and this module, and the modules that
decide (rows, tasks, roots) are imported inside those functions, so `import simcrop.layout` stays light.
"""
from __future__ import annotations

import math
from pathlib import Path

SHARD_DIGITS = 5                  # shard file names sort in numeric order up to 99,999 shards
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
ENCODER = "encoder.pt"
DVCLIVE = "dvclive"
MAIN = "main"                     # the pre-training corpus as an evaluation dataset: the run folder itself
RANDOM = "random"                 # the untrained row: evaluated, never pre-trained (no pretrain/ folder)
FRACTION_TASKS = ("probe", "segment")                  # evaluate/<row>/<task>/<dataset>/<pct>.json
TEXT_TASKS = ("zeroshot", "retrieval", "grounding")    # evaluate/<row>/<task>.json
FEATURES = "features"             # evaluate/<row>/probe/<dataset>/features.json: the probe's one feature pass
# preprocess.format: how preprocessed volumes and masks are stored. b2nd (default): a blosc2 NDArray, int16,
# preprocess.cache_codec (lz4hc) + byte shuffle, chunked so that a training crop decodes only the chunks under
# it, its affine in the file's own metadata; nifti: gzip NIfTI-1. simcrop.data.preprocessed_io reads either (the format from the suffix).
VOLUME_FORMATS = ("b2nd", "nifti")
VOLUME_SUFFIXES = {"b2nd": ".b2nd", "nifti": ".nii.gz"}


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


def percent(fraction: float) -> str:
    """File-name form of a data fraction: 0.01 -> "1", 0.1 -> "10", 1.0 -> "100"."""
    return f"{100 * float(fraction):g}"


def volume_format(path) -> str:
    """The VOLUME_FORMATS entry a preprocessed file's name says (`.b2nd` | `.nii.gz`, `.nii`); ValueError else."""
    name = Path(path).name
    if name.endswith(".nii"):
        return "nifti"
    for fmt, suffix in VOLUME_SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    raise ValueError(f"{path}: not a preprocessed volume (expected a name ending in "
                     f"{' or '.join(VOLUME_SUFFIXES.values())})")


class Preprocessed:
    """`preprocessed/`: one int16 volume per volume id (VOLUME_FORMATS), its masks, the per-shard QC tables.

    `fmt` names the format to write (preprocessing: `preprocess.format`), and every volume and mask path
    has its suffix. Without it (every reader) a path is the file on disk in either format, so a run made
    with either reads alike; preprocessing removes a volume's files of the other format when it writes
    one, and should both exist anyway, the newer (the one written last) is the volume.
    """

    def __init__(self, root, fmt: str | None = None):
        if fmt is not None and fmt not in VOLUME_FORMATS:
            raise ValueError(f"unknown volume format {fmt!r}; expected one of {VOLUME_FORMATS}")
        self.root = Path(root)
        self.format = fmt

    def _file(self, folder: Path, stem: str) -> Path:
        if self.format is not None:
            return folder / f"{stem}{VOLUME_SUFFIXES[self.format]}"
        found = []
        for suffix in VOLUME_SUFFIXES.values():
            path = folder / f"{stem}{suffix}"
            try:
                found.append((path.stat().st_mtime, -len(found), path))
            except OSError:
                continue
        if not found:                                 # not written (yet): the default format's name
            return folder / f"{stem}{VOLUME_SUFFIXES[VOLUME_FORMATS[0]]}"
        return max(found)[2]                          # newest; a tie goes to the first format

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
        return self._file(self.volumes, volume_id)

    def mask(self, volume_id: str, kind: str) -> Path:
        return self._file(self.masks, f"{volume_id}.{kind}")

    def qc_record(self, volume_id: str) -> Path:
        return self.root / "qc" / f"{volume_id}.json"

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

    def __fspath__(self) -> str:
        return str(self.root)


class DataDir:
    """A folder holding one dataset's tables and its preprocessed volumes (the run, or a downstream set)."""

    def __init__(self, root):
        self.root = Path(root)

    manifest = property(lambda self: self.root / "manifest.csv")
    ingest_report = property(lambda self: self.root / "ingest_report.json")
    sentences = property(lambda self: self.root / "sentences.jsonl")
    sentences_quarantine = property(lambda self: self.root / "sentences_quarantine.csv")
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

    def log(self, *job: str) -> Path:
        """`logs/<step>/.../<job>.log`, one per Snakemake job: log("pretrain", "{objective}")."""
        return self.logs.joinpath(*job[:-1], f"{job[-1]}.log")

    def benchmark(self, rule: str, *job: str) -> Path:
        """`benchmarks/<rule>/.../<job>.tsv`: Snakemake's `benchmark:` file (the report reads the rule from
        the first folder, simcrop.evaluate.results_collect.read_benchmarks)."""
        return self.benchmarks.joinpath(rule, *job[:-1], f"{job[-1]}.tsv")


def run_of(cfg) -> Run:
    """The run folder of a Config (`<results_dir>/<run>`)."""
    return Run(cfg.run_dir)


def data_dir(cfg, name: str) -> DataDir:
    """The folder of evaluation dataset `name`: the run itself for MAIN, else `downstream/<name>/`."""
    if name == MAIN:
        return run_of(cfg)
    cfg.downstream_dataset(name)                     # clear error for an unknown name
    return run_of(cfg).downstream(name)


def encoder_of(cfg, row: str) -> Path | None:
    """The exported encoder an evaluation of `row` loads (None for the untrained RANDOM row)."""
    return None if row == RANDOM else run_of(cfg).encoder(row)


def figures_beside(result_json) -> Path:
    """The folder of figures a task writes beside its result file: `grounding.json` -> `grounding_figures/`."""
    result_json = Path(result_json)
    return result_json.with_name(f"{result_json.stem}_figures")


def synthetic_marker(data_root) -> Path:
    """The file `simcrop synthesize` writes last under a corpus root: the synthetic corpus is done."""
    return Path(data_root) / "synthetic" / "corpus.json"


# ---------------------------------------------------------------- what a Config's run reads and makes

def dropped_notice(cfg) -> str:
    """One line naming the demo downstream sets an overlay inherited and the run drops ("" when none)."""
    from simcrop.data import roots

    return roots.dropped_notice(cfg)


def check_roots(cfg) -> None:
    """ConfigError naming the key and path of each root the run reads that does not exist."""
    from simcrop.data import roots

    roots.check_roots(cfg)


def ingest_inputs(cfg) -> list[str]:
    """What ingest reads: the synthetic corpus's marker, or the dataset's folder and each of its CSVs (a
    folder's time stamp misses an edited CSV inside it), so a CSV edit reruns ingest."""
    if cfg.data.dataset == "synthetic":
        return [str(synthetic_marker(cfg.data.root))]
    from simcrop.data.ingest import input_files

    return input_files(cfg.data)


def downstream_inputs(cfg, name: str) -> list[str]:
    """What preparing downstream set `name` reads: the corpus marker for a set synthesized with the run's
    corpus, else its root."""
    from simcrop.data import roots

    root = cfg.downstream_dataset(name).root
    return [str(synthetic_marker(cfg.data.root))] if roots.synthesized_here(cfg, root) else [root]


def manifest_shards(manifest, shard_size: int) -> list[str]:
    """The shard names a manifest makes (its row count read without parsing the whole table)."""
    from simcrop.data.manifest import count_rows

    return shard_names(count_rows(manifest), shard_size)


def trained_rows(cfg) -> list[str]:
    """Every name a pre-training job can have: the built-in objectives and the configured variants."""
    from simcrop.train import variants

    return variants.trained_rows(cfg)


def pretrain_settings(cfg, row: str) -> tuple[dict, dict]:
    """(model, pretrain) settings a row trains with (a variant's merged over the run's)."""
    from simcrop.train import variants

    return variants.settings(cfg, row)


def init_encoder(cfg, row: str) -> Path | None:
    """The encoder of the row that `row` starts from (a variant's `init_from`; None: none)."""
    from simcrop.train import variants

    source = variants.init_row(cfg, row)
    return None if source is None else run_of(cfg).encoder(source)


def pretrained_rows(cfg) -> list[str]:
    """The experiment's rows that have a pre-training job (every row but RANDOM)."""
    return [row for row in cfg.experiment.objectives if row != RANDOM]


def pretrain_targets(cfg) -> list[Path]:
    """The encoder of every pre-trained row of the experiment, and of the configured model.objective."""
    run, rows = run_of(cfg), dict.fromkeys([*pretrained_rows(cfg), cfg.model.objective])
    return [run.encoder(row) for row in rows]


def evaluation_targets(cfg) -> list[Path]:
    """row x (probe | segment) x dataset x fraction, then pre-trained row x text task on the main data."""
    from simcrop.data import roots
    from simcrop.evaluate import targets

    run, rows = run_of(cfg), cfg.experiment.objectives
    out = []
    for dataset in [MAIN, *roots.experiment_downstream(cfg)]:
        for task in targets.tasks_of(cfg, dataset):
            fractions = cfg.probe.fractions if task == "probe" else cfg.segment.fractions
            out += [run.evaluation(row, task, dataset, percent(f)) for row in rows for f in fractions]
    text_tasks = [task for task in cfg.experiment.tasks if task in TEXT_TASKS]
    return out + [run.evaluation(row, task) for row in pretrained_rows(cfg) for task in text_tasks]


def report_inputs(cfg) -> list[Path]:
    """What the report reads: every evaluation, and each pre-trained row's metrics."""
    run = run_of(cfg)
    return [*evaluation_targets(cfg), *(run.pretrain_metrics(row) for row in pretrained_rows(cfg))]


REPORT_PAGES = ("results.md", "metrics.json", "results.html", "heatmaps.html", "benchmarks.html")


def report_targets(cfg) -> list[Path]:
    """The results table and metrics, and the pages `snakemake --report` embeds (asked for by name, so a
    run made before they existed gets them too)."""
    return [run_of(cfg).report / name for name in REPORT_PAGES]
