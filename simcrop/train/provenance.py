"""Which settings a checkpoint's weights depend on, and what changed since it was written.

A run folder holds one training: resuming it with another learning rate, mask ratio or training set
would give weights that match neither setting, and a finished run must not be passed off as trained
with settings it never saw. Every key of `model` and `pretrain` shapes the weights except the ones
below, which only decide how often we log and save, how many processes feed the loader (the data of a
step is a function of (seed, epoch, index), whatever the worker count), or whether alignment
diagnostics are logged (computed without gradient, from no random number).

The number of training processes does shape the weights: the global batch is batch_size x world size x
accumulation, each rank reads every world_size-th sample of an epoch's permutation, and each rank has
its own random stream. So the world size is a training setting, compared as the number of ranks that
trained the checkpoint (its `rng_per_rank`) against the ranks of this run: `WORLD_SIZE`, however the run
was started (the workflow's launcher, torchrun by hand). `pretrain.gpus_per_node` and `pretrain.nodes`
themselves are not compared: they say how to start those processes, and 1 node x 4 GPUs trains exactly
what 2 x 2 does. A checkpoint saved without per-rank states (not by the trainer) has no known world size.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)
SECTIONS = ("model", "pretrain")
NOT_TRAINING = {"pretrain.log_every", "pretrain.checkpoint_every", "pretrain.keep_every", "pretrain.num_workers",
                "pretrain.diagnostics",
                "pretrain.gpus_per_node", "pretrain.nodes"}   # how to launch; the world size is compared instead
DATA_KEY = "training data"
WORLD_KEY = "world size"   # DDP processes (ranks) that train the weights
INIT_KEY = "pretrain.init contents"   # the same path may hold another encoder (its row was retrained)
ON_CHANGE = ("fail", "restart")      # what to do with a checkpoint made with other settings


class SettingsChanged(RuntimeError):
    """A checkpoint written with other training settings than this run's; the message names the keys."""


def _flatten(values, prefix: str = "") -> dict:
    if isinstance(values, dict):
        out = {}
        for key, value in values.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: values}


def training_settings(config_dict: dict) -> dict:
    """Dotted key -> value for every setting that shapes the weights (lists as lists)."""
    flat = {}
    for section in SECTIONS:
        flat.update(_flatten(config_dict.get(section) or {}, section))
    return {k: v for k, v in flat.items() if k not in NOT_TRAINING}


def init_fingerprint(path) -> str:
    """sha256 of the file the encoder starts from ("" without one)."""
    if not path:
        return ""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrain.init: {path} does not exist (train the row it names first)")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def changed_settings(saved: dict, current: dict, saved_data: str | None = None,
                     current_data: str | None = None, saved_init: str | None = None,
                     current_init: str | None = None, saved_world: int | None = None,
                     current_world: int | None = None) -> list[str]:
    """`key: old -> new` for each training setting that differs, plus the training data, the init file's
    contents and the world size when both sides are known and differ. Keys missing on one side count as
    changed."""
    old, new = training_settings(saved), training_settings(current)
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            changes.append(f"{key}: {a!r} -> {b!r}")
    if saved_data and current_data and saved_data != current_data:
        changes.append(f"{DATA_KEY}: train-split volumes, reports or QC differ "
                       f"(fingerprint {saved_data[:12]} -> {current_data[:12]})")
    if saved_init is not None and current_init is not None and saved_init != current_init:
        changes.append(f"{INIT_KEY}: the encoder file the run starts from changed "
                       f"(sha256 {saved_init[:12] or '<none>'} -> {current_init[:12] or '<none>'})")
    if saved_world and current_world and int(saved_world) != int(current_world):
        changes.append(f"{WORLD_KEY}: {int(saved_world)} -> {int(current_world)} processes (the global batch and "
                       "each rank's data differ; pretrain.gpus_per_node x pretrain.nodes, or torchrun's)")
    return changes


def check_settings(ckpt: dict, path, cfg, data_fingerprint: str, on_change: str,
                   init_fp: str | None = None, world_size: int | None = None) -> bool:
    """True when the checkpoint may be resumed; False when it must be discarded (on_change "restart").
    Raises SettingsChanged (on_change "fail") naming every changed key. world_size: this run's ranks
    (None: not compared)."""
    extra = ckpt.get("extra") or {}
    changes = changed_settings(ckpt.get("config") or {}, cfg.to_dict(), extra.get("data_fingerprint"),
                               data_fingerprint, extra.get("init_fingerprint"), init_fp,
                               len(ckpt.get("rng_per_rank") or []) or None, world_size)
    if not changes:
        return True
    listing = "; ".join(changes)
    if on_change == "restart":
        log.warning("%s was trained with other settings (%s): discarding it and training anew", path, listing)
        return False
    raise SettingsChanged(f"{path} (step {ckpt.get('step')}) was trained with other settings: {listing}. "
                          "Resuming would mix two trainings and keeping it would misreport its settings: "
                          "rerun with --on-change restart to discard it and train anew, or use another --out-dir")
