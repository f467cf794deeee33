"""The step loop of pre-training: `Training.run` steps, logs and checkpoints a model `pretrain` prepared.

Per step: `pretrain.accumulation` micro-batches (gradients all-reduced on the last), clip, optimiser and
schedule step. Every `log_every` steps the loss window (summed per rank) is reduced over ranks and logged
to dvclive; every `checkpoint_every` steps, at the end and on SIGTERM/SIGINT, checkpoints/last.pt is saved
with every rank's RNG state and half-filled window, so a resumed run continues bitwise.
"""
from __future__ import annotations

import contextlib
import csv
import gc
import logging
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from simcrop.config import Config
from simcrop.io import write_json_atomic
from simcrop.layout import CHECKPOINT_DIR, DVCLIVE, ENCODER, LAST_CHECKPOINT
from simcrop.train import checkpoint as ckpt_mod
from simcrop.train.distributed import all_reduce_mean, any_rank, rank_digests, wrap_ddp
from simcrop.train.export import export_encoder
from simcrop.optim import clip_gradients

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")   # pretrain.precision (config/schema.yaml's enum)
METRICS = "metrics.json"        # simcrop.layout names it only inside a run folder; --out-dir may be anywhere
TIMING = "timing.json"          # beside last.pt: throughput of the process that saved it (not in the checkpoint)

class TrainingInterrupted(SystemExit):
    """Stopped by a signal after saving a checkpoint; exits with 128 + signal number when uncaught."""

    def __init__(self, signum: int, step: int):
        super().__init__(128 + signum)
        self.signum, self.step = signum, step


def autocast_for(precision: str, device: torch.device):
    """auto: bf16 autocast on CUDA, fp32 elsewhere; fp32: none; bf16: autocast on any device."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"pretrain.precision must be one of {PRECISIONS}; got {precision!r}")


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
        trim_dvclive(out_dir / DVCLIVE, step)
    # No dvc.yaml and no DVC experiment: the pipeline's own dvc.yaml owns the metrics and plots.
    return Live(dir=str(out_dir / DVCLIVE), resume=resume, save_dvc_exp=False, dvcyaml=False)


def gather_states(window: dict, window_steps: int) -> list:
    """Every rank's RNG state and half-filled loss window, in rank order (on every rank)."""
    state = {"rng": ckpt_mod.rng_state(), "window": {n: float(v) for n, v in window.items()},
             "window_steps": int(window_steps)}
    if not dist.is_initialized():
        return [state]
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def write_summary(out_dir: Path, summary: dict, first_window: dict | None) -> None:
    final = summary.get("losses") or {}
    write_json_atomic(out_dir / METRICS, {
        **summary, "falling": {n: final[n] < v for n, v in (first_window or {}).items() if n in final}})


class _Window:
    """What is summed between two log lines: losses (this rank's, reduced when logged), diagnostics, timing."""

    def __init__(self, saved: dict | None = None, device: torch.device | None = None):
        saved = saved or {}                     # a checkpoint's half-filled window: a resumed run continues it
        self.losses = defaultdict(float, {n: torch.tensor(v, dtype=torch.float32, device=device)
                                          for n, v in (saved.get("window") or {}).items()})
        self.steps = int(saved.get("window_steps") or 0)
        self.wait = self.time = 0.0
        self.timed_steps = 0                    # steps of this window run by this process (timing)
        self.diag_sums, self.diag_counts = defaultdict(float), defaultdict(int)   # pretrain.diagnostics

    def add(self, out: dict, accumulation: int) -> None:
        self.losses["loss"] += out["loss"].detach().float() / accumulation
        for name, value in out["losses"].items():
            if name != "loss":                  # "loss" is the weighted total
                self.losses[name] += value.detach().float() / accumulation
        for name, value in (out.get("diagnostics") or {}).items():
            if value == value:                  # NaN: nothing qualified in this batch
                self.diag_sums[name] += value
                self.diag_counts[name] += 1


class Training:
    """A prepared run (model on its device, optimiser and schedule at `start_step`) and its running state:
    `run` is the step loop, each step `train_step`, then `log` / `save` when due."""

    def __init__(self, cfg: Config, info, out_dir: Path, model, optimizer, scheduler, start_step: int,
                 extra: dict, own_window: dict, fingerprints: dict):
        self.cfg, self.pc, self.info = cfg, cfg.pretrain, info
        self.out_dir, self.ckpt_dir = out_dir, out_dir / CHECKPOINT_DIR
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.ddp = wrap_ddp(model, info, find_unused_parameters=getattr(model, "find_unused_parameters", False))
        self.autocast = autocast_for(self.pc.precision, info.device)
        self.per_step = self.pc.batch_size * self.pc.accumulation      # samples per rank and optimiser step
        self.start_step = self.step = start_step
        self.extra, self.fingerprints = extra, fingerprints
        self.first_window, self.final_window = extra.get("first_window"), extra.get("final_window") or {}
        self.window = _Window(own_window, info.device)
        self.total_wait = self.elapsed = 0.0
        self.live = None

    def release_ddp(self) -> None:
        """Drop the DDP wrapper while the process group still exists. Its reducer holds the group; freed
        after `destroy_process_group`, the reducer would destroy the gloo group itself, holding the GIL
        while gloo's worker thread waits for the GIL to free a finished collective's tensors: a deadlock
        (seen once in the 2-rank test; pytorch/pytorch#56297)."""
        self.ddp = None
        gc.collect()                                    # the wrapper may sit in a reference cycle

    def run(self, loader: DataLoader, end_step: int, progress: bool) -> dict:
        """Train up to `end_step`; returns the summary. Raises TrainingInterrupted (after saving) on a signal."""
        pc, info = self.pc, self.info
        self.live = open_live(self.out_dir, resume=self.start_step > 0, step=self.start_step) if info.is_main else None
        self.model.train()
        batches = iter(loader)
        bar = tqdm(total=pc.steps, initial=self.start_step, desc="pretrain", unit="step",
                   disable=not (progress and info.is_main))
        with stop_signals() as stop:
            while self.step < end_step:
                lr = self.train_step(batches)
                bar.update(1)
                if self.step % max(pc.log_every, 1) == 0 or self.step == end_step:
                    self.log(lr, bar)
                signum = stop["signum"]
                if info.distributed and any_rank(bool(signum), info.device):
                    signum = signum or signal.SIGTERM                # every rank stops at the same step
                if signum or self.step % max(pc.checkpoint_every, 1) == 0 or self.step == end_step:
                    self.save()
                if signum:
                    raise TrainingInterrupted(signum, self.step)
        bar.close()
        del batches                                                  # shut loader workers down
        return self.finish()

    def train_step(self, batches) -> float:
        """One optimiser step over `pretrain.accumulation` micro-batches; returns the step's learning rate."""
        pc, window = self.pc, self.window
        t_step = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        for micro in range(pc.accumulation):
            t_wait = time.perf_counter()
            batch = to_device(next(batches), self.info.device)
            wait = time.perf_counter() - t_wait
            window.wait, self.total_wait = window.wait + wait, self.total_wait + wait
            last_micro = micro == pc.accumulation - 1     # gradients are all-reduced on the last one only
            sync = contextlib.nullcontext() if last_micro or not self.info.distributed else self.ddp.no_sync()
            with sync:
                with self.autocast():
                    out = self.ddp(batch)
                (out["loss"] / pc.accumulation).backward()
            window.add(out, pc.accumulation)
        clip_gradients(self.model, pc.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        window.steps, window.timed_steps = window.steps + 1, window.timed_steps + 1
        took = time.perf_counter() - t_step
        window.time, self.elapsed = window.time + took, self.elapsed + took
        return lr

    def log(self, lr: float, bar) -> None:
        """Reduce the window's loss means over ranks, log them (main rank) and start a new window."""
        window, live = self.window, self.live
        names = sorted(window.losses)
        means = all_reduce_mean(torch.stack([window.losses[n] for n in names]) / window.steps).tolist()
        self.final_window = dict(zip(names, means))
        self.first_window = self.first_window or self.final_window
        busy = max(window.time, 1e-12)
        if live is not None:
            live.step = self.step
            for name, value in self.final_window.items():
                live.log_metric(f"train/{name}", value)
            for name in sorted(window.diag_sums):                   # this rank's batches (diagnostics)
                live.log_metric(f"diag/{name}", window.diag_sums[name] / window.diag_counts[name])
            live.log_metric("train/lr", lr)
            live.log_metric("train/data_wait_s", window.wait / max(window.timed_steps, 1))
            live.log_metric("train/data_wait_share", window.wait / busy)
            live.log_metric("train/samples_per_s", window.timed_steps * self.per_step * self.info.world_size / busy)
            live.next_step()
        bar.set_postfix(loss=f"{self.final_window['loss']:.4f}", wait=f"{window.wait / busy:.0%}")
        self.window = _Window()

    def save(self) -> None:
        """checkpoints/last.pt (+ a milestone copy every pretrain.keep_every steps). Collective: every rank
        contributes its RNG state and loss window; the main rank writes."""
        states = gather_states(self.window.losses, self.window.steps)
        if not self.info.is_main:
            return
        # loss windows are summed per rank and reduced at logging: a resumed run continues them
        self.extra.update(first_window=self.first_window, final_window=self.final_window, **self.fingerprints,
                          window_per_rank=[{"window": st["window"], "window_steps": st["window_steps"]}
                                           for st in states])
        path = ckpt_mod.save_checkpoint(self.ckpt_dir / LAST_CHECKPOINT, self.model, self.optimizer, self.scheduler,
                                        self.step, self.cfg.to_dict(), self.extra,
                                        rng_per_rank=[st["rng"] for st in states])
        write_json_atomic(self.ckpt_dir / TIMING, {
            "samples_per_s": self._samples() / max(self.elapsed, 1e-12),
            "data_wait_share": self.total_wait / max(self.elapsed, 1e-12)})
        keep_every = self.pc.keep_every
        if keep_every and self.step % keep_every == 0:
            ckpt_mod.copy_checkpoint(path, self.ckpt_dir / ckpt_mod.milestone_name(self.step))

    def finish(self) -> dict:
        """The summary; the main rank writes metrics.json and, once every step is done, encoder.pt.
        DDP: every rank's digest of its trained parameters goes into the summary, and ranks that finished
        with different weights (which DDP must never produce) fail the run after metrics.json is written."""
        summary = {"step": self.step, "done": self.step >= self.pc.steps, "resumed_from": self.start_step,
                   "losses": self.final_window, "first_losses": self.first_window or {},
                   "samples_per_s": self._samples() / max(self.elapsed, 1e-12),
                   "data_wait_share": self.total_wait / max(self.elapsed, 1e-12), "world_size": self.info.world_size}
        digests = rank_digests(self.model) if self.info.distributed else []
        if digests:
            summary["weights_sha256_per_rank"] = digests
        if self.info.is_main:
            write_summary(self.out_dir, summary, self.first_window)
            if self.live is not None:
                self.live.end()
            if summary["done"] and len(set(digests)) <= 1:
                export_encoder(self.ckpt_dir / LAST_CHECKPOINT, self.out_dir / ENCODER)
        if len(set(digests)) > 1:
            raise RuntimeError(f"DDP ranks finished step {self.step} with different weights (parameter sha256 per "
                               f"rank: {[d[:12] for d in digests]}); not exporting {ENCODER}")
        return summary

    def _samples(self) -> int:
        """Samples trained by this process's run (every rank), for throughput."""
        return (self.step - self.start_step) * self.per_step * self.info.world_size
