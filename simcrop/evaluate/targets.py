"""Where each evaluation dataset lives and how it is evaluated, for the CLI and the Snakemake rules alike.

"main" is the pre-training corpus (its test split, in the run folder itself); every other name is an
entry of the config's `downstream` mapping, ingested and preprocessed (with the main `preprocess`
settings, so the encoder sees the spacing it was trained on) into `<run_dir>/downstream/<name>/`.
Every path (data folders, encoders, checkpoints) is `simcrop.layout`'s; this module holds the settings.
Objectives without a text side (MAE, and the supervised upper bound for the probe) still get
zero-shot/retrieval/grounding jobs: each writes an `"applicable": false` file (the model has no
image-text heads, `simcrop.evaluate.embed.NotApplicableError`), which the results table shows as "n/a".
"""
from __future__ import annotations

import dataclasses

from simcrop.config import Config, DataConfig
from simcrop.layout import MAIN


def downstream_data_config(cfg: Config, name: str) -> DataConfig:
    """The DataConfig an adapter reads for downstream set `name` (split settings shared with the main data)."""
    entry = cfg.downstream_dataset(name)
    return dataclasses.replace(cfg.data, dataset=entry.dataset, root=entry.root)


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
