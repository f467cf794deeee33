"""Pre-training loop: any model whose forward(batch) returns {"loss", "losses": {name: scalar}}.

Reads top to bottom: distributed set-up -> seeds -> data -> model, optimiser, schedule -> resume or
init -> loop (accumulate, clip, step, log, checkpoint) -> final checkpoint, metrics, encoder export.

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

import contextlib
import csv
import json
import logging
import random
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from simcrop.config import Config, dump
from simcrop.data.datasets import PretrainDataset
from simcrop.io import remove_stale_temp_files, write_json_atomic, write_text_atomic
from simcrop.train import checkpoint as ckpt_mod
from simcrop.train.distributed import (StepSampler, all_reduce_mean, any_rank, barrier, cleanup,
                                       init_distributed, wrap_ddp)
from simcrop.train.export import export_encoder, load_encoder_init
from simcrop.train.optim import build_optimizer, build_scheduler, clip_gradients
from simcrop.train.provenance import ON_CHANGE, check_settings, init_fingerprint

log = logging.getLogger(__name__)


class TrainingInterrupted(SystemExit):
    """Stopped by a signal after saving a checkpoint; exits with 128 + signal number when uncaught."""

    def __init__(self, signum: int, step: int):
        super().__init__(128 + signum)
        self.signum, self.step = signum, step


def default_model_factory(model_cfg):
    from simcrop.model.simcrop import build_pretrain_model
    return build_pretrain_model(model_cfg)


def default_collate_factory(model_cfg):
    from simcrop.model.simcrop import build_collate
    return build_collate(model_cfg)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def autocast_for(precision: str, device: torch.device):
    """auto: bf16 autocast on CUDA, fp32 elsewhere; fp32: none; bf16: autocast on any device."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"pretrain.precision must be auto, fp32 or bf16; got {precision!r}")


def to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


@contextlib.contextmanager
def stop_signals():
    """Turn SIGTERM/SIGINT into a flag checked once per step (a second SIGINT interrupts at once)."""
    flag = {"signum": 0}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["signum"] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["signum"] = signum
        log.warning("signal %d: stopping after this step, saving a checkpoint", signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def trim_dvclive(directory: Path, step: int) -> None:
    """Drop metric rows logged after `step` (by a run killed after its last checkpoint)."""
    for path in (directory / "plots" / "metrics").rglob("*.tsv"):
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        if rows and any(int(r["step"]) > step for r in rows):
            kept = [r for r in rows if int(r["step"]) <= step]
            with open(path, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
                writer.writeheader()
                writer.writerows(kept)


def open_live(out_dir: Path, resume: bool, step: int):
    from dvclive import Live
    if resume:
        trim_dvclive(out_dir / "dvclive", step)
    # No dvc.yaml and no DVC experiment: the pipeline's own dvc.yaml owns the metrics and plots.
    return Live(dir=str(out_dir / "dvclive"), resume=resume, save_dvc_exp=False, dvcyaml=False)


def gather_states(window: dict, window_steps: int) -> list:
    """Every rank's RNG state and half-filled loss window, in rank order (on every rank)."""
    state = {"rng": ckpt_mod.rng_state(), "window": {n: float(v) for n, v in window.items()},
             "window_steps": int(window_steps)}
    if not dist.is_initialized():
        return [state]
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


TIMING = "timing.json"          # beside last.pt: throughput of the process that saved it (not in the checkpoint)
OWN_FILES = ("metrics.json", "encoder.pt", "pretrain.config.yaml")   # what pretrain writes in out_dir


def discard_run(out_dir: Path, ckpt_dir: Path) -> None:
    """Remove a previous training's checkpoints, curves and results (main rank only)."""
    import shutil

    for folder in (ckpt_dir, out_dir / "dvclive"):
        shutil.rmtree(folder, ignore_errors=True)
    for name in ("metrics.json", "encoder.pt"):
        (out_dir / name).unlink(missing_ok=True)


def write_summary(out_dir: Path, summary: dict, first_window: dict | None) -> None:
    final = summary.get("losses") or {}
    write_json_atomic(out_dir / "metrics.json", {
        **summary, "falling": {n: final[n] < v for n, v in (first_window or {}).items() if n in final}})


def finished(ckpt: dict, ckpt_dir: Path, out_dir: Path, steps: int, info) -> dict:
    """A run whose checkpoint is at (or past) the requested step: write what is missing — metrics.json
    from the checkpoint's loss windows, encoder.pt once every step is done — and return the summary.
    (A run stopped after its last save but before these files, or one whose outputs Snakemake removed
    for a logging-only change, must not stay stuck.)"""
    step, extra = int(ckpt["step"]), dict(ckpt.get("extra") or {})
    log.info("checkpoint %s is at step %d: nothing to train", ckpt_dir / ckpt_mod.LAST, step)
    metrics = out_dir / "metrics.json"
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
        if summary["done"] and not (out_dir / "encoder.pt").exists():
            export_encoder(ckpt_dir / ckpt_mod.LAST, out_dir / "encoder.pt")
    barrier()
    return summary


def pretrain(cfg: Config, run_dir, out_dir, model_factory: Callable | None = None,
             collate_factory: Callable | None = None, max_steps: int | None = None, *,
             manifest=None, sentences=None, preprocessed=None, qc=None, keep_every: int = 0,
             progress: bool = True, pad_mode: str = "reflect", device: str | None = None,
             on_change: str = "fail") -> dict:
    """Train (or resume) for cfg.pretrain.steps optimiser steps; stop early after max_steps (total).

    Inputs default to <run_dir>/manifest.csv, sentences.jsonl, qc.csv and preprocessed/volumes/.
    device: None = cuda:<LOCAL_RANK> when available, else CPU; "cpu" forces CPU (tests, debugging).
    keep_every: also keep checkpoints/step_XXXXXX.pt every that many steps (0: only last.pt).
    on_change: a checkpoint made with other training settings or data: "fail" (SettingsChanged naming
    the keys) or "restart" (discard it, train from step 0).
    Writes pretrain.config.yaml (the resolved config) once the checkpoint is known to match it.
    Returns {"step", "losses" (final window), "samples_per_s", "data_wait_share", "resumed_from", ...}.
    Raises TrainingInterrupted after saving a checkpoint when SIGTERM/SIGINT arrives.
    """
    if on_change not in ON_CHANGE:
        raise ValueError(f"on_change must be one of {ON_CHANGE}; got {on_change!r}")
    pc, run_dir, out_dir = cfg.pretrain, Path(run_dir), Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    owns_group = not dist.is_initialized()
    info = init_distributed(device)
    try:
        # --- data: order and augmentation are functions of (seed, epoch, index) --------------------------
        dataset = PretrainDataset(
            manifest or run_dir / "manifest.csv", sentences or run_dir / "sentences.jsonl",
            preprocessed or run_dir / "preprocessed", qc or run_dir / "qc.csv", split="train",
            crop_size=cfg.model.img_size, augment=True, seed=pc.seed, flip_prob=pc.flip_prob,
            scale_crop=pc.scale_crop, intensity_shift=pc.intensity_shift,
            intensity_shift_prob=pc.intensity_shift_prob, pad_mode=pad_mode, maps=pc.diagnostics,
            labels=cfg.model.objective == "supervised")
        data_fingerprint = dataset.fingerprint()
        init_fp = init_fingerprint(pc.init)
        if info.is_main:                       # a SIGKILL during a save leaves its temporary file behind
            remove_stale_temp_files(out_dir, OWN_FILES)  # --out-dir may be shared: only our own names
            remove_stale_temp_files(ckpt_dir)            # checkpoints/ is ours alone
        barrier()
        resume_path = ckpt_mod.latest_checkpoint(ckpt_dir)
        ckpt = ckpt_mod.read_checkpoint(resume_path) if resume_path else None
        if ckpt and not check_settings(ckpt, resume_path, cfg, data_fingerprint, on_change, init_fp):
            ckpt = None
            if info.is_main:
                discard_run(out_dir, ckpt_dir)
            barrier()
        if info.is_main:
            write_text_atomic(out_dir / "pretrain.config.yaml", dump(cfg))
        start_step = int(ckpt["step"]) if ckpt else 0
        end_step = pc.steps if max_steps is None else min(pc.steps, int(max_steps))
        if ckpt and start_step >= end_step:                     # rerun of a finished job: nothing to redo
            return finished(ckpt, ckpt_dir, out_dir, pc.steps, info)
        per_step = pc.batch_size * pc.accumulation
        sampler = StepSampler(len(dataset), seed=pc.seed, rank=info.rank, world_size=info.world_size,
                              start=start_step * per_step)
        loader = DataLoader(dataset, batch_size=pc.batch_size, sampler=sampler, num_workers=pc.num_workers,
                            collate_fn=(collate_factory or default_collate_factory)(cfg.model),
                            pin_memory=info.device.type == "cuda", persistent_workers=pc.num_workers > 0,
                            generator=torch.Generator().manual_seed(pc.seed))   # keeps global RNG untouched

        # --- model, optimiser, schedule: same init on every rank, then resume or init ------------------
        torch.manual_seed(pc.seed)
        model = (model_factory or default_model_factory)(cfg.model).to(info.device)
        optimizer = build_optimizer(model, pc.lr, pc.weight_decay, pc.betas)
        scheduler = build_scheduler(optimizer, pc.lr, pc.min_lr, pc.warmup_steps, pc.steps)
        seed_everything(pc.seed + info.rank)
        extra, own_window = {}, {}
        if ckpt:
            ckpt_mod.load_model_state(model, ckpt["model"], str(resume_path))
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            per_rank = ckpt.get("rng_per_rank") or []
            windows = (ckpt.get("extra") or {}).get("window_per_rank") or []
            if len(per_rank) == info.world_size:
                ckpt_mod.set_rng_state(per_rank[info.rank])
                own_window = windows[info.rank] if len(windows) == info.world_size else {}
            else:
                log.warning("checkpoint holds RNG states for %d ranks, this run has %d: reseeding",
                            len(per_rank), info.world_size)
                seed_everything(pc.seed + info.rank + 1_000_003 * start_step)
            extra = dict(ckpt.get("extra") or {})
            log.info("resumed from %s at step %d", resume_path, start_step)
        elif pc.init:
            load_encoder_init(model.encoder, pc.init)
            log.info("encoder initialised from %s", pc.init)
        ckpt = None                                              # free the loaded tensors
        ddp = wrap_ddp(model, info, find_unused_parameters=getattr(model, "find_unused_parameters", False))
        autocast = autocast_for(pc.precision, info.device)

        def save(step: int) -> None:
            states = gather_states(window, window_steps)          # collective: every rank takes part
            if info.is_main:
                # loss windows are summed per rank and reduced at logging: a resumed run continues them
                extra.update(first_window=first_window, final_window=final_window, data_fingerprint=data_fingerprint,
                             init_fingerprint=init_fp,
                             window_per_rank=[{"window": st["window"], "window_steps": st["window_steps"]}
                                              for st in states])
                path = ckpt_mod.save_checkpoint(ckpt_dir / ckpt_mod.LAST, model, optimizer, scheduler, step,
                                                cfg.to_dict(), extra, rng_per_rank=[st["rng"] for st in states])
                write_json_atomic(ckpt_dir / TIMING, {
                    "samples_per_s": (step - start_step) * per_step * info.world_size / max(elapsed, 1e-12),
                    "data_wait_share": total_wait / max(elapsed, 1e-12)})
                if keep_every and step % keep_every == 0:
                    ckpt_mod.copy_checkpoint(path, ckpt_dir / ckpt_mod.milestone_name(step))

        # --- loop ---------------------------------------------------------------------------------------
        live = open_live(out_dir, resume=start_step > 0, step=start_step) if info.is_main else None
        window = defaultdict(float, {n: torch.tensor(v, dtype=torch.float32, device=info.device)
                                     for n, v in (own_window.get("window") or {}).items()})
        window_steps, window_wait, window_time = int(own_window.get("window_steps") or 0), 0.0, 0.0
        timed_steps = 0                                          # steps of this window run by this process
        diag_sums, diag_counts = defaultdict(float), defaultdict(int)   # pretrain.diagnostics, per log window
        first_window, final_window = extra.get("first_window"), extra.get("final_window") or {}
        total_wait = elapsed = 0.0
        step = start_step
        model.train()
        batches = iter(loader)
        bar = tqdm(total=pc.steps, initial=start_step, desc="pretrain", unit="step",
                   disable=not (progress and info.is_main))
        with stop_signals() as stop:
            while step < end_step:
                t_step = time.perf_counter()
                lr = optimizer.param_groups[0]["lr"]
                for micro in range(pc.accumulation):
                    t_wait = time.perf_counter()
                    batch = to_device(next(batches), info.device)
                    wait = time.perf_counter() - t_wait
                    window_wait, total_wait = window_wait + wait, total_wait + wait
                    last_micro = micro == pc.accumulation - 1
                    sync = contextlib.nullcontext() if last_micro or not info.distributed else ddp.no_sync()
                    with sync:
                        with autocast():
                            out = ddp(batch)
                        (out["loss"] / pc.accumulation).backward()
                    window["loss"] += out["loss"].detach().float() / pc.accumulation
                    for name, value in out["losses"].items():
                        if name != "loss":                           # "loss" is the weighted total
                            window[name] += value.detach().float() / pc.accumulation
                    for name, value in (out.get("diagnostics") or {}).items():
                        if value == value:                           # NaN: nothing qualified in this batch
                            diag_sums[name] += value
                            diag_counts[name] += 1
                clip_gradients(model, pc.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                window_steps, timed_steps = window_steps + 1, timed_steps + 1
                took = time.perf_counter() - t_step
                window_time, elapsed = window_time + took, elapsed + took
                bar.update(1)

                if step % max(pc.log_every, 1) == 0 or step == end_step:
                    names = sorted(window)
                    means = all_reduce_mean(torch.stack([window[n] for n in names]) / window_steps).tolist()
                    final_window = dict(zip(names, means))
                    first_window = first_window or final_window
                    if live is not None:
                        live.step = step
                        for name, value in final_window.items():
                            live.log_metric(f"train/{name}", value)
                        for name in sorted(diag_sums):           # this rank's batches (diagnostics)
                            live.log_metric(f"diag/{name}", diag_sums[name] / diag_counts[name])
                        live.log_metric("train/lr", lr)
                        live.log_metric("train/data_wait_s", window_wait / max(timed_steps, 1))
                        live.log_metric("train/data_wait_share", window_wait / max(window_time, 1e-12))
                        live.log_metric("train/samples_per_s",
                                        timed_steps * per_step * info.world_size / max(window_time, 1e-12))
                        live.next_step()
                    bar.set_postfix(loss=f"{final_window['loss']:.4f}",
                                    wait=f"{window_wait / max(window_time, 1e-12):.0%}")
                    window, window_steps, window_wait, window_time = defaultdict(float), 0, 0.0, 0.0
                    timed_steps = 0
                    diag_sums, diag_counts = defaultdict(float), defaultdict(int)

                signum = stop["signum"]
                if info.distributed and any_rank(bool(signum), info.device):
                    signum = signum or signal.SIGTERM                # every rank stops at the same step
                if signum or step % max(pc.checkpoint_every, 1) == 0 or step == end_step:
                    save(step)
                if signum:
                    raise TrainingInterrupted(signum, step)
        bar.close()
        del batches                                                  # shut loader workers down

        # --- results ------------------------------------------------------------------------------------
        samples = (step - start_step) * per_step * info.world_size
        summary = {"step": step, "done": step >= pc.steps, "resumed_from": start_step,
                   "losses": final_window, "first_losses": first_window or {},
                   "samples_per_s": samples / max(elapsed, 1e-12),
                   "data_wait_share": total_wait / max(elapsed, 1e-12), "world_size": info.world_size}
        if info.is_main:
            write_summary(out_dir, summary, first_window)
            if live is not None:
                live.end()
            if summary["done"]:
                export_encoder(ckpt_dir / ckpt_mod.LAST, out_dir / "encoder.pt")
        barrier()
        return summary
    finally:
        if owns_group:
            cleanup()
