"""Where each evaluation dataset lives and how it is evaluated, for the CLI and the Snakemake rules alike.

"main" is the pre-training corpus (its test split, in the run folder itself); every other name is an
entry of the config's `downstream` mapping, ingested and preprocessed (with the main `preprocess`
settings, so the encoder sees the spacing it was trained on) into `<run_dir>/downstream/<name>/`.
Pre-trained encoders come from `<run_dir>/pretrain/<objective>/`; "random" is the untrained baseline.
Objectives without a text side (`IMAGE_ONLY`: MAE, and the supervised upper bound for the probe) still get
zero-shot/retrieval/grounding jobs: each writes an `"applicable": false` file (the model has no
image-text heads, `simcrop.evaluate.embed.NotApplicableError`), which the results table shows as "n/a".
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from simcrop.config import Config, DataConfig

MAIN = "main"
RANDOM = "random"
IMAGE_ONLY = ("mae", "supervised")         # no text side: text tasks are "n/a" for these objectives


def has_text_side(objective: str) -> bool:
    """False for the random baseline and the image-only objectives (their text tasks are n/a)."""
    return objective != RANDOM and objective not in IMAGE_ONLY


def data_dir(cfg: Config, name: str) -> Path:
    """Folder holding manifest.csv, qc.csv and preprocessed/ for evaluation dataset `name`."""
    if name == MAIN:
        return cfg.run_dir
    cfg.downstream_dataset(name)                     # clear error for an unknown name
    return cfg.run_dir / "downstream" / name


def downstream_data_config(cfg: Config, name: str) -> DataConfig:
    """The DataConfig an adapter reads for downstream set `name` (split settings shared with the main data)."""
    entry = cfg.downstream_dataset(name)
    return dataclasses.replace(cfg.data, dataset=entry.dataset, root=entry.root)


def encoder_path(cfg: Config, objective: str) -> Path | None:
    """The exported encoder of `objective` (None for the random-init baseline)."""
    return None if objective == RANDOM else cfg.run_dir / "pretrain" / objective / "encoder.pt"


def checkpoint_path(cfg: Config, objective: str) -> Path:
    """The full pre-training checkpoint (text side included) the zero-shot/retrieval/grounding tasks read."""
    return cfg.run_dir / "pretrain" / objective / "checkpoints" / "last.pt"


def probe_settings(cfg: Config, name: str) -> dict:
    """evaluate_probe's task and label_names for dataset `name`."""
    if name == MAIN:
        return {"task": "multilabel", "label_names": list(cfg.probe.labels) or None}
    entry = cfg.downstream_dataset(name)
    return {"task": entry.probe_task, "label_names": list(entry.labels) or None}


def segment_settings(cfg: Config, name: str) -> dict:
    """evaluate_segmentation's label_map and classes for dataset `name`."""
    if name == MAIN:
        return {"label_map": cfg.experiment.segment_label_map, "classes": None}
    entry = cfg.downstream_dataset(name)
    return {"label_map": entry.label_map, "classes": list(entry.classes) or None}


def tasks_of(cfg: Config, name: str) -> list[str]:
    """The probe/segment tasks run on dataset `name`."""
    if name == MAIN:
        return [t for t in cfg.experiment.tasks if t in ("probe", "segment")]
    return list(cfg.downstream_dataset(name).tasks)


def percent(fraction: float) -> str:
    """File-name form of a data fraction: 0.01 -> "1", 0.1 -> "10", 1.0 -> "100"."""
    return f"{100 * float(fraction):g}"
