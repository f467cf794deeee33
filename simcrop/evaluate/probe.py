"""Linear probe on a frozen encoder (method.md §5), as the official `Classification_Linear` does it.

Feature: mean of the patch tokens (CLS excluded) of the last block's output, before the encoder's
final LayerNorm: the official model is MAE's `global_pool=True` ViT, which drops `norm` for `fc_norm`.
Head: LayerNorm without affine (the official `fc_norm` stays at its identity init, since it runs under
no_grad) -> Linear (weights trunc-normal std 2e-5, zero bias). Features are computed once per encoder and
view (no masking, eval mode) in `simcrop.evaluate.probe_features` and cached (`feature_cache`):

- view "tiles" (default, `probe.view`): the whole preprocessed volume, not a centre crop that cuts off
  peripheral lesions. The volume is tiled with the model's crop at half-crop stride on one patch lattice
  (`simcrop.evaluate.tiling`, as `simcrop heatmap` does; padding as the centre crop's, constant air). Each
  lattice cell's patch token is averaged over the tiles holding it, then the cells are averaged weighted
  by the share of their voxels inside the volume: every voxel of the volume weighs the same. (A plain mean
  of all tiles' tokens would weigh the centre up to 8x the corners, since inner cells sit in up to 8
  half-overlapping tiles, and would count cells of pure padding.) A volume no larger than the crop is one
  tile, the centre crop, but padding-only cells do not count. Cost: one encoder pass per tile.
- view "center": the deterministic centre crop (`eval_transform`), mean of all its patch tokens.

Splits (patient level, from the manifest): `protocol="holdout"` (default) trains on `train`, picks
the epoch on `val` and reports on `test`; a manifest without `val` rows gets val_fraction of the
train patients held out (`simcrop.data.splits.hold_out_patients`, the ingest hold-out). `protocol="val_is_test"` is the official protocol: train on train + val,
pick the epoch on `test`, report on `test` (optimistic; for comparison with published numbers only).

Multi-label (CT-RATE, RadChestCT): BCE; metrics per-class AUROC and their mean over classes whose
test labels hold both values (others are null and counted in `n_classes_unscored`). Multi-class
(CC-CCII): the manifest's labels are one-hot over the classes; cross-entropy; accuracy.

Selection: `simcrop.data.selection` (manifest ∩ QC ∩ file); splits: `simcrop.data.splits`; metrics:
`simcrop.evaluate.metrics` (undefined values NaN in memory, null in the JSON).

Uncertainty: each fraction's "test" also holds "per_volume" {"volume_id", "patient_id", "labels" (label
vectors; one-hot for multiclass), "probabilities" (sigmoid, or softmax for multiclass)} in test order,
and "intervals" {"mean_auroc" | "accuracy": {"value", "lo", "hi"}}: the 95 % percentile interval over
1000 patient-level bootstrap resamples of the test split (`ClusterBootstrap`, seed 0; a resample's mean
AUROC averages the classes holding both labels in that resample). Same patients and seed in every
objective's file, so `simcrop report` pairs the resamples for differences (SimCroP − MAE).
"""
from __future__ import annotations

import dataclasses

import json
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from simcrop.data.selection import usable_volumes
from simcrop.data.splits import nested_fractions, split_ids
from simcrop.evaluate.bootstrap import LEVEL, N_BOOT, ClusterBootstrap
from simcrop.evaluate.metrics import (ACCURACY, MEAN_AUROC, accuracy, bootstrap_statistic, json_safe,
                                      multilabel_metrics)
from simcrop.evaluate.probe_features import build_encoder, encoder_tag, extract_features
from simcrop.io import write_json_atomic
from simcrop.optim import build_optimizer, build_scheduler, clip_gradients

log = logging.getLogger(__name__)
TASKS = ("multilabel", "multiclass")
BOOT_SEED = 0


def probe_metrics(logits: torch.Tensor, targets: torch.Tensor, task: str, label_names: Sequence[str]) -> dict:
    """multilabel: {"mean_auroc", "auroc": {name: float}, "n_classes_unscored"}; multiclass: {"accuracy"}.

    A class whose targets hold one value only has no AUROC (NaN); mean_auroc is NaN if no class has one.
    """
    if task == "multiclass":
        return {ACCURACY: accuracy(targets.numpy(), logits.argmax(1).numpy())}
    return multilabel_metrics(logits.numpy(), targets.numpy(), label_names)


def probabilities(logits: torch.Tensor, task: str) -> np.ndarray:
    """(N, K) logits -> float64 probabilities: sigmoid (multilabel) or softmax (multiclass)."""
    x = logits.double()
    return (torch.softmax(x, dim=1) if task == "multiclass" else torch.sigmoid(x)).numpy()


def per_volume_record(volume_ids: Sequence[str], patient_ids: Sequence[str], labels: np.ndarray, logits: torch.Tensor,
                task: str, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> tuple[dict, dict]:
    """(per_volume, intervals) for a fraction's "test" (module docstring)."""
    probs = probabilities(logits, task)
    key = ACCURACY if task == "multiclass" else MEAN_AUROC
    boot = ClusterBootstrap(list(patient_ids), n_boot=n_boot, seed=seed)
    interval = boot.stat(bootstrap_statistic(task, labels, probs))
    per_volume = {"volume_id": list(volume_ids), "patient_id": list(patient_ids),
                  "labels": np.asarray(labels).astype(int).tolist(), "probabilities": probs.tolist()}
    return per_volume, {key: interval}


def _main_metric(metrics: dict) -> float:
    value = metrics[ACCURACY] if ACCURACY in metrics else metrics[MEAN_AUROC]
    return -math.inf if value is None or math.isnan(value) else value


def make_head(dim: int, n_out: int) -> nn.Sequential:
    head = nn.Sequential(nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False), nn.Linear(dim, n_out))
    nn.init.trunc_normal_(head[1].weight, std=2e-5)
    nn.init.zeros_(head[1].bias)
    return head


def train_probe(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                task: str = "multilabel", label_names: Sequence[str] | None = None, steps: int = 1000,
                batch_size: int = 32, lr: float = 1.5e-3, min_lr: float = 0.0, weight_decay: float = 0.0,
                warmup_fraction: float = 0.1, grad_clip: float = 1.0, max_evals: int = 100,
                seed: int = 0) -> tuple[nn.Module, dict]:
    """Fit LayerNorm -> Linear on features (N, C) for `steps` steps; keep the epoch with the best val metric.

    train_y/val_y: (N, K) float 0/1 (multilabel) or (N,) int64 class index (multiclass). AdamW on the
    head, warmup (warmup_fraction of the steps) + cosine per step, grad clip 1.0; defaults as the
    official CT-RATE 1 % run (1000 steps, lr 1.5e-3, batch 32). Validation after every epoch, or every
    few epochs so that there are at most `max_evals`. Returns (head at its best epoch, {"best_epoch",
    "val_metric", "history": [(epoch, val metric)]}); ties keep the earlier epoch.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}; got {task!r}")
    if label_names is not None:
        n_out = len(label_names)
    else:
        n_out = int(train_y.shape[1]) if task == "multilabel" else int(max(train_y.max(), val_y.max())) + 1
    label_names = list(label_names or [str(k) for k in range(n_out)])
    torch.manual_seed(seed)
    head = make_head(train_x.shape[1], n_out)
    steps_per_epoch = math.ceil(len(train_x) / batch_size)
    epochs = math.ceil(steps / steps_per_epoch)
    eval_every = math.ceil(epochs / max_evals)
    total = epochs * steps_per_epoch
    optimizer = build_optimizer(head, lr, weight_decay, betas=(0.9, 0.999))
    scheduler = build_scheduler(optimizer, lr, min_lr, int(warmup_fraction * total), total)
    loss_fn = nn.BCEWithLogitsLoss() if task == "multilabel" else nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    best, best_state, best_epoch, history = -math.inf, None, -1, []
    for epoch in range(epochs):
        head.train()
        for idx in torch.randperm(len(train_x), generator=gen).split(batch_size):
            loss = loss_fn(head(train_x[idx]), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(head, grad_clip)
            optimizer.step()
            scheduler.step()
        if (epoch + 1) % eval_every and epoch + 1 != epochs:
            continue
        head.eval()
        with torch.no_grad():
            metric = _main_metric(probe_metrics(head(val_x), val_y, task, label_names))
        history.append((epoch, metric))
        if metric > best or best_state is None:
            best, best_epoch = metric, epoch
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    head.eval()
    return head, {"best_epoch": best_epoch, "val_metric": None if best == -math.inf else best, "history": history}


def label_table(manifest: pd.DataFrame, ids: Sequence[str], label_names: Sequence[str] | None = None):
    """(names, (N, K) float32 0/1) from the manifest's labels JSON; names default to the first row's keys."""
    rows = manifest.set_index("volume_id").loc[list(ids), "labels"]
    dicts = [json.loads(s) if s else {} for s in rows]
    names = list(label_names or next((list(d) for d in dicts if d), []))
    if not names:
        raise ValueError("the manifest has no labels for the probe")
    missing = sorted({n for d in dicts for n in names if n not in d})
    if missing:
        raise ValueError(f"labels missing from some manifest rows: {missing[:5]}")
    return names, np.array([[float(d[n]) for n in names] for d in dicts], dtype=np.float32)


def evaluate_probe(cfg, encoder_path, run_dir, out_json, *, label_names=None, task: str = "multilabel",
                   crop: Sequence[int] | None = None, cache_dir=None, vit_overrides: dict | None = None,
                   progress: bool = True, n_boot: int = N_BOOT, **overrides) -> dict:
    """Linear probe of one encoder at each data fraction -> metrics JSON at out_json (atomic); returns it.

    The settings are `cfg.probe` (fractions, protocol, steps, batch_size, lr, seed, view); `overrides`
    replace single fields of it (`fractions=(1.0,)`, `steps=50`). Reads <run_dir>/manifest.csv, qc.csv and
    preprocessed/volumes/. encoder_path None = random init. label_names/task: the dataset's
    (`simcrop.evaluate.targets.probe_settings`). Features are cached under cache_dir (default
    <out_json dir>/features/<encoder tag>-<view>.pt).
    """
    pc = dataclasses.replace(cfg.probe, **overrides)
    fractions, protocol, steps, batch_size, lr, seed, view = (pc.fractions, pc.protocol, pc.steps, pc.batch_size,
                                                               pc.lr, pc.seed, pc.view)
    run_dir, out_json = Path(run_dir), Path(out_json)
    usable = usable_volumes(run_dir)
    manifest = usable.frame
    splits = split_ids(manifest, protocol, cfg.data.val_fraction, cfg.data.split_seed)
    encoder = build_encoder(cfg.model, crop, encoder_path, vit_overrides, seed)
    tag = encoder_tag(encoder_path, seed, cfg.model, vit_overrides)
    cache = Path(cache_dir or out_json.parent / "features") / f"{tag}-{view}.pt"
    wanted = list(dict.fromkeys(v for s in ("train", "val", "test") for v in splits[s]))
    ids, feats = extract_features(encoder, {v: usable.paths[v] for v in wanted}, crop, cache_path=cache,
                                  progress=progress, view=view, hu_window=cfg.preprocess.hu_window)
    row = {v: i for i, v in enumerate(ids)}
    names, table = label_table(manifest, wanted, label_names)
    if task == "multiclass" and not (table.sum(1) == 1).all():
        raise ValueError(f"multiclass labels must be one-hot over {names}; some rows have {set(table.sum(1))} ones")
    lab = {v: table[i] for i, v in enumerate(wanted)}

    def xy(vs):
        y = torch.from_numpy(np.stack([lab[v] for v in vs]))
        return feats[[row[v] for v in vs]], (y.argmax(1) if task == "multiclass" else y)

    patients = dict(zip(manifest["volume_id"], manifest["patient_id"]))
    subsets = nested_fractions(splits["train"], [patients[v] for v in splits["train"]], fractions, seed,
                               np.stack([lab[v] for v in splits["train"]]))
    (val_x, val_y), (test_x, test_y) = xy(splits["val"]), xy(splits["test"])
    results = {}
    for f, subset in subsets.items():
        head, info = train_probe(*xy(subset), val_x, val_y, task, names, steps, batch_size, lr, seed=seed)
        with torch.no_grad():
            test_logits = head(test_x)
        test = probe_metrics(test_logits, test_y, task, names)
        test["per_volume"], test["intervals"] = per_volume_record(
            splits["test"], [patients[v] for v in splits["test"]], np.stack([lab[v] for v in splits["test"]]),
            test_logits, task, n_boot)
        results[f"{100 * f:g}"] = {"fraction": f, "n_train": len(subset),
                                   "n_train_patients": len({patients[v] for v in subset}),
                                   "best_epoch": info["best_epoch"], "val_metric": info["val_metric"], "test": test}
        log.info("probe %s %g%%: n_train %d, val %s, test %s", tag, 100 * f, len(subset), info["val_metric"],
                 {k: v for k, v in test.items() if k not in ("auroc", "per_volume")})
    metrics = {"task": task, "protocol": protocol, "encoder": str(encoder_path) if encoder_path else "random",
               "label_names": names, "feature_dim": int(feats.shape[1]),
               "crop": list(crop or encoder.img_size), "view": view, "steps": steps, "lr": lr, "seed": seed,
               "bootstrap": {"unit": "patient", "n_boot": n_boot, "seed": BOOT_SEED, "level": LEVEL,
                             "interval": "percentile"},
               "n": {s: len(splits[s]) for s in ("train", "val", "test")}, "fractions": results}
    write_json_atomic(out_json, json_safe(metrics))
    return metrics
