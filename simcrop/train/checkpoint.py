"""Training checkpoints: written atomically, read back exactly.

A checkpoint is one `torch.save`d dict:
    model       state_dict, minus the frozen text encoder (see `frozen_keys`): it ships with its package
    optimizer   optimizer.state_dict()
    scheduler   scheduler.state_dict()
    step        optimiser steps done
    rng         {"python", "numpy", "torch", "cuda" (list, one per device, when CUDA is initialised)}
    rng_per_rank  [rng of rank 0, rank 1, ...] when the trainer saves (each rank resumes its own stream)
    config      the resolved config dict of the run
    extra       free-form dict (wall time, samples seen, ...)
    excluded    the model keys left out, so loading can check that exactly those are missing

Everything in it is a tensor or a plain Python value, so it loads with `weights_only=True`. Nothing
in it depends on the clock, and `save_torch` writes it byte-identically for identical contents.

Retention: `<dir>/last.pt`, overwritten at every save (one file: a ViT-B with its optimiser state is
about 1 GB); `keep_every` in the trainer adds milestone copies `<dir>/step_XXXXXX.pt`.
"""
from __future__ import annotations

import logging
import os
import random
import re
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from simcrop.io import atomic_path
from simcrop.layout import LAST_CHECKPOINT
# the reading side lives in simcrop.model.weights (evaluation reads checkpoints too)
from simcrop.model.weights import CheckpointError, _unwrap, frozen_keys, load_model_state, read_checkpoint

log = logging.getLogger(__name__)


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state["numpy"] = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_tuples(state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value):
    """random.setstate needs tuples; a round trip may hand back lists."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_checkpoint(path, model: nn.Module, optimizer=None, scheduler=None, step: int = 0,
                    config_dict: dict | None = None, extra: dict | None = None,
                    rng_per_rank: list | None = None) -> Path:
    """Write the checkpoint to a temporary file beside `path`, then rename it onto `path`.

    rng_per_rank: every rank's `rng_state()` (the trainer gathers them) so each rank of a resumed
    DDP run continues its own random stream; `rng` is always this process's state.
    """
    path = Path(path)
    model = _unwrap(model)
    excluded = frozen_keys(model)
    state = {k: v for k, v in model.state_dict().items() if k not in excluded}
    payload = {
        "model": state,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": int(step),
        "rng": rng_state(),
        "rng_per_rank": rng_per_rank if rng_per_rank is not None else [],
        "config": config_dict or {},
        "extra": extra or {},
        "excluded": sorted(excluded),
    }
    return save_torch(payload, path)


def canonical(value):
    """Fresh containers and interned strings throughout: pickle writes a second reference to one object
    differently from an equal copy, so without this a resumed run (whose optimizer and scheduler dicts
    were loaded) saves other bytes than an uninterrupted one for the same values. Tensors are kept."""
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, dict):
        out = (OrderedDict if isinstance(value, OrderedDict) else dict)(
            (canonical(k), canonical(v)) for k, v in value.items())
        if hasattr(value, "_metadata"):                  # state_dict's per-module versions
            out._metadata = canonical(value._metadata)
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(canonical(v) for v in value)
    return value


def save_torch(obj, path) -> Path:
    """torch.save `obj` to `path` atomically and reproducibly.

    Given a file name, torch names the zip archive inside after it (`<stem>/data.pkl`), so saving to a
    randomly named temporary file would make identical tensors hash differently on every run. Given an
    open file, it always writes `archive/`; with `canonical` containers, identical contents give
    identical bytes.
    """
    obj = canonical(obj)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
    return Path(path)


def load_checkpoint(path, model: nn.Module, optimizer=None, scheduler=None, restore_rng: bool = True) -> dict:
    """Restore model (and optimiser, scheduler, RNG when given) from `path`; returns the checkpoint dict."""
    ckpt = read_checkpoint(path)
    load_model_state(model, ckpt["model"], str(path))
    if optimizer is not None:
        if ckpt.get("optimizer") is None:
            raise CheckpointError(f"{path}: holds no optimizer state")
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None:
        if ckpt.get("scheduler") is None:
            raise CheckpointError(f"{path}: holds no scheduler state")
        scheduler.load_state_dict(ckpt["scheduler"])
    if restore_rng:
        set_rng_state(ckpt["rng"])
    return ckpt


def latest_checkpoint(directory) -> Path | None:
    """`<dir>/last.pt` if present, else the highest `step_XXXXXX.pt`, else None."""
    directory = Path(directory)
    if (directory / LAST_CHECKPOINT).is_file():
        return directory / LAST_CHECKPOINT
    steps = []
    for p in directory.glob("step_*.pt") if directory.is_dir() else []:
        match = re.fullmatch(r"step_(\d+)\.pt", p.name)
        if match:
            steps.append((int(match.group(1)), p))
    return max(steps)[1] if steps else None


def milestone_name(step: int) -> str:
    return f"step_{step:06d}.pt"


def copy_checkpoint(src, dst) -> None:
    """Milestone copy: a hard link when the filesystem allows, else an atomic byte copy."""
    dst = Path(dst)
    try:
        if dst.exists():
            dst.unlink()
        os.link(src, dst)
    except OSError:
        with atomic_path(dst) as tmp:
            tmp.write_bytes(Path(src).read_bytes())
