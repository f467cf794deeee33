"""Pre-training loop: any model whose forward(batch) returns {"loss", "losses": {name: scalar}}.

`pretrain` reads top to bottom: distributed set-up -> data -> resume check -> seeds -> model, optimiser,
schedule -> resume or init -> `simcrop.train.loop.Training.run` (accumulate, clip, step, log, checkpoint)
-> final checkpoint, metrics, encoder export.

Outputs under out_dir:
    checkpoints/last.pt   every `checkpoint_every` steps, at the end and on SIGTERM/SIGINT (atomic)
    dvclive/              train/<loss name>, train/lr, train/data_wait_s, ... every `log_every` steps;
                          with pretrain.diagnostics, diag/<name> (simcrop.model.alignment_diagnostics)
    metrics.json          first-window and final-window mean of each loss term, throughput, data wait share
    encoder.pt            {"model": encoder state_dict} with official key names, once `steps` are done

Resume is automatic from checkpoints/last.pt and exact (bitwise on CPU): data order, augmentation and
each report's MLM mask come from (seed, epoch, index) through `StepSampler`; the RNG states of every
rank (image masks, dropout), the half-filled logging window and the optimiser are in the checkpoint.

A checkpoint written with other training settings or data (`simcrop.train.provenance`) is never
resumed or passed off as done: `on_change="fail"` stops naming the changed keys, `"restart"` discards
the old run and trains anew (what the Snakemake rule asks: Snakemake reruns the job because its
settings changed). A run already at its last step only (re)writes what is missing: metrics.json and
encoder.pt.
"""
from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from simcrop.config import Config, dump
from simcrop.data.datasets import PretrainDataset
from simcrop.io import remove_stale_temp_files, write_text_atomic
from simcrop.layout import CHECKPOINT_DIR, DVCLIVE, ENCODER, LAST_CHECKPOINT, DataDir
from simcrop.model.weights import load_encoder_init, load_model_state, read_checkpoint
from simcrop.optim import build_optimizer, build_scheduler
from simcrop.train import checkpoint as ckpt_mod
from simcrop.train.distributed import StepSampler, barrier, cleanup, init_distributed
from simcrop.train.export import export_encoder
from simcrop.train.loop import METRICS, TIMING, Training, TrainingInterrupted, autocast_for, write_summary
from simcrop.train.provenance import ON_CHANGE, check_settings, init_fingerprint

log = logging.getLogger(__name__)

__all__ = ["pretrain", "TrainingInterrupted", "autocast_for"]   # the last two live in simcrop.train.loop


def default_model_factory(model_cfg):
    from simcrop.model.factory import build_pretrain_model
    return build_pretrain_model(model_cfg)


def default_collate_factory(model_cfg):
    from simcrop.model.factory import build_collate
    return build_collate(model_cfg)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


OWN_FILES = (METRICS, ENCODER, "pretrain.config.yaml")   # what pretrain writes in out_dir


def discard_run(out_dir: Path, ckpt_dir: Path) -> None:
    """Remove a previous training's checkpoints, curves and results (main rank only)."""
    import shutil

    for folder in (ckpt_dir, out_dir / DVCLIVE):
        shutil.rmtree(folder, ignore_errors=True)
    for name in (METRICS, ENCODER):
        (out_dir / name).unlink(missing_ok=True)


def finished(ckpt: dict, ckpt_dir: Path, out_dir: Path, steps: int, info) -> dict:
    """A run whose checkpoint is at (or past) the requested step: write what is missing — metrics.json
    from the checkpoint's loss windows, encoder.pt once every step is done — and return the summary.
    (A run stopped after its last save but before these files, or one whose outputs Snakemake removed
    for a logging-only change, must not stay stuck.)"""
    step, extra = int(ckpt["step"]), dict(ckpt.get("extra") or {})
    log.info("checkpoint %s is at step %d: nothing to train", ckpt_dir / LAST_CHECKPOINT, step)
    metrics = out_dir / METRICS
    if metrics.exists():
        summary = json.loads(metrics.read_text(encoding="utf-8"))
    else:
        timing_path = ckpt_dir / TIMING
        timing = json.loads(timing_path.read_text(encoding="utf-8")) if timing_path.exists() else {}
        summary = {"losses": extra.get("final_window") or {}, "first_losses": extra.get("first_window") or {},
                   "world_size": len(ckpt.get("rng_per_rank") or []) or 1, **timing}
    summary = {**summary, "step": step, "done": step >= steps, "resumed_from": step}
    if info.is_main:
        if not metrics.exists():
            write_summary(out_dir, summary, extra.get("first_window"))
        if summary["done"] and not (out_dir / ENCODER).exists():
            export_encoder(ckpt_dir / LAST_CHECKPOINT, out_dir / ENCODER)
    barrier()
    return summary


def _dataset(cfg: Config, run_dir: Path, manifest, sentences, preprocessed, qc) -> PretrainDataset:
    """The training split; order and augmentation are functions of (seed, epoch, index)."""
    pc, run = cfg.pretrain, DataDir(run_dir)
    return PretrainDataset(
        manifest or run.manifest, sentences or run.sentences, preprocessed or run.preprocessed.root, qc or run.qc,
        split="train", crop_size=cfg.model.img_size, augment=True, seed=pc.seed, flip_prob=pc.flip_prob,
        scale_crop=pc.scale_crop, intensity_shift=pc.intensity_shift, intensity_shift_prob=pc.intensity_shift_prob,
        pad_mode=pc.pad_mode, maps=pc.diagnostics, labels=cfg.model.objective == "supervised")


def _checkpoint_to_resume(cfg: Config, out_dir: Path, info, fingerprints: dict, on_change: str):
    """(checkpoint, path) to resume from, or (None, path): none, or one made with other settings or data
    (discarded when on_change is "restart"). Also writes pretrain.config.yaml once that is settled."""
    ckpt_dir = out_dir / CHECKPOINT_DIR
    if info.is_main:                       # a SIGKILL during a save leaves its temporary file behind
        remove_stale_temp_files(out_dir, OWN_FILES)  # --out-dir may be shared: only our own names
        remove_stale_temp_files(ckpt_dir)            # checkpoints/ is ours alone
    barrier()
    resume_path = ckpt_mod.latest_checkpoint(ckpt_dir)
    ckpt = read_checkpoint(resume_path) if resume_path else None
    if ckpt and not check_settings(ckpt, resume_path, cfg, fingerprints["data_fingerprint"], on_change,
                                   fingerprints["init_fingerprint"], world_size=info.world_size):
        ckpt = None
        if info.is_main:
            discard_run(out_dir, ckpt_dir)
        barrier()
    if info.is_main:
        write_text_atomic(DataDir(out_dir).resolved_config("pretrain"), dump(cfg))
    return ckpt, resume_path


def _restore(model, optimizer, scheduler, ckpt: dict | None, resume_path, pc, info) -> dict:
    """Load a checkpoint's model/optimiser/schedule and this rank's RNG state (or `pretrain.init`'s encoder
    for a fresh run); returns this rank's saved loss window ({} if none)."""
    if not ckpt:
        if pc.init:
            load_encoder_init(model.encoder, pc.init)
            log.info("encoder initialised from %s", pc.init)
        return {}
    load_model_state(model, ckpt["model"], str(resume_path))
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    step, per_rank = int(ckpt["step"]), ckpt.get("rng_per_rank") or []
    windows = (ckpt.get("extra") or {}).get("window_per_rank") or []
    own_window = {}
    if len(per_rank) == info.world_size:
        ckpt_mod.set_rng_state(per_rank[info.rank])
        own_window = windows[info.rank] if len(windows) == info.world_size else {}
    else:                        # another world size: no exact resume, but distinct streams per rank and step
        log.warning("checkpoint holds RNG states for %d ranks, this run has %d: reseeding",
                    len(per_rank), info.world_size)
        seed_everything(pc.seed + info.rank + 1_000_003 * step)
    log.info("resumed from %s at step %d", resume_path, step)
    return own_window


def pretrain(cfg: Config, run_dir, out_dir, model_factory: Callable | None = None,
             collate_factory: Callable | None = None, max_steps: int | None = None, *,
             manifest=None, sentences=None, preprocessed=None, qc=None, progress: bool = True,
             device: str | None = None, on_change: str = "fail") -> dict:
    """Train (or resume) for cfg.pretrain.steps optimiser steps; stop early after max_steps (total).

    Every training setting comes from cfg (model, pretrain: keep_every, pad_mode, ...); the whole config is
    recorded in each checkpoint and compared on resume (simcrop.train.provenance).
    Inputs default to <run_dir>/manifest.csv, sentences.jsonl, qc.csv and preprocessed/volumes/.
    device: None = cuda:<LOCAL_RANK> when available, else CPU; "cpu" forces CPU (tests, debugging).
    on_change: a checkpoint made with other training settings or data: "fail" (SettingsChanged naming
    the keys) or "restart" (discard it, train from step 0).
    Writes pretrain.config.yaml (the resolved config) once the checkpoint is known to match it.
    Returns {"step", "losses" (final window), "samples_per_s", "data_wait_share", "resumed_from", ...}.
    Raises TrainingInterrupted after saving a checkpoint when SIGTERM/SIGINT arrives.
    """
    if on_change not in ON_CHANGE:
        raise ValueError(f"on_change must be one of {ON_CHANGE}; got {on_change!r}")
    pc, run_dir, out_dir = cfg.pretrain, Path(run_dir), Path(out_dir)
    owns_group = not dist.is_initialized()
    info = init_distributed(device)
    asked = pc.gpus_per_node * pc.nodes
    if asked > 1 and info.world_size == 1:
        log.warning("pretrain.gpus_per_node x nodes asks for %d processes but this one runs alone (WORLD_SIZE "
                    "unset): start it with `python -m simcrop.train.launch --gpus-per-node %d --nodes %d -- "
                    "pretrain ...` (what the workflow does) or torchrun", asked, pc.gpus_per_node, pc.nodes)
    training = None
    try:
        dataset = _dataset(cfg, run_dir, manifest, sentences, preprocessed, qc)
        fingerprints = {"data_fingerprint": dataset.fingerprint(), "init_fingerprint": init_fingerprint(pc.init)}
        ckpt, resume_path = _checkpoint_to_resume(cfg, out_dir, info, fingerprints, on_change)
        start_step = int(ckpt["step"]) if ckpt else 0
        end_step = pc.steps if max_steps is None else min(pc.steps, int(max_steps))
        if ckpt and start_step >= end_step:                     # rerun of a finished job: nothing to redo
            return finished(ckpt, out_dir / CHECKPOINT_DIR, out_dir, pc.steps, info)
        sampler = StepSampler(len(dataset), seed=pc.seed, rank=info.rank, world_size=info.world_size,
                              start=start_step * pc.batch_size * pc.accumulation)
        loader = DataLoader(dataset, batch_size=pc.batch_size, sampler=sampler, num_workers=pc.num_workers,
                            collate_fn=(collate_factory or default_collate_factory)(cfg.model),
                            pin_memory=info.device.type == "cuda", persistent_workers=pc.num_workers > 0,
                            generator=torch.Generator().manual_seed(pc.seed))   # keeps global RNG untouched

        # same init on every rank (seeded), then each rank's own RNG stream, then the checkpoint's state
        torch.manual_seed(pc.seed)
        model = (model_factory or default_model_factory)(cfg.model).to(info.device)
        optimizer = build_optimizer(model, pc.lr, pc.weight_decay, pc.betas)
        scheduler = build_scheduler(optimizer, pc.lr, pc.min_lr, pc.warmup_steps, pc.steps)
        seed_everything(pc.seed + info.rank)
        own_window = _restore(model, optimizer, scheduler, ckpt, resume_path, pc, info)
        extra = dict(ckpt.get("extra") or {}) if ckpt else {}
        ckpt = None                                              # free the loaded tensors
        training = Training(cfg, info, out_dir, model, optimizer, scheduler, start_step, extra, own_window,
                            fingerprints)
        summary = training.run(loader, end_step, progress)
        barrier()
        return summary
    finally:
        if training is not None:
            training.release_ddp()                               # before the group goes (Training.release_ddp)
        if owns_group:
            cleanup()
