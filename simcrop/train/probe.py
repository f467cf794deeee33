"""Linear probe on a frozen encoder (method.md §5), as the official `Classification_Linear` does it.

Feature: mean of the patch tokens (CLS excluded) of the last block's output, before the encoder's
final LayerNorm: the official model is MAE's `global_pool=True` ViT, which drops `norm` for `fc_norm`.
Head: LayerNorm without affine (the official `fc_norm` stays at its identity init, since it runs under
no_grad) -> Linear (weights trunc-normal std 2e-5, zero bias). Features are computed once per encoder and
view (no masking, eval mode) and cached atomically:

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
train patients held out. `protocol="val_is_test"` is the official protocol: train on train + val,
pick the epoch on `test`, report on `test` (optimistic; for comparison with published numbers only).

Multi-label (CT-RATE, RadChestCT): BCE; metrics per-class AUROC and their mean over classes whose
test labels hold both values (others are null and counted in `n_classes_unscored`). Multi-class
(CC-CCII): the manifest's labels are one-hot over the classes; cross-entropy; accuracy.

Uncertainty: each fraction's "test" also holds "per_volume" {"volume_id", "patient_id", "labels" (label
vectors; one-hot for multiclass), "probabilities" (sigmoid, or softmax for multiclass)} in test order,
and "intervals" {"mean_auroc" | "accuracy": {"value", "lo", "hi"}}: the 95 % percentile interval over
1000 patient-level bootstrap resamples of the test split (`ClusterBootstrap`, seed 0; a resample's mean
AUROC averages the classes holding both labels in that resample). Same patients and seed in every
objective's file, so `simcrop report` pairs the resamples for differences (SimCroP − MAE).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata
from torch import nn
from tqdm import tqdm

from simcrop.data.datasets import load_volume
from simcrop.data.manifest import read_manifest
from simcrop.data.transforms import apply, eval_transform
from simcrop.evaluate.bootstrap import LEVEL, N_BOOT, ClusterBootstrap
from simcrop.evaluate.tiling import tile_batches, tiling
from simcrop.io import atomic_path, write_json_atomic
from simcrop.model.vit3d import VisionTransformer3D, build_vit
from simcrop.train.export import load_encoder_init
from simcrop.train.optim import build_optimizer, build_scheduler, clip_gradients

log = logging.getLogger(__name__)
PROTOCOLS = ("holdout", "val_is_test")
TASKS = ("multilabel", "multiclass")
VIEWS = ("tiles", "center")
PAD_MODE = "constant"          # air padding, for the centre crop and the tiles alike
BOOT_SEED = 0


def build_encoder(model_cfg, img_size: Sequence[int] | None = None, encoder_path=None,
                  vit_overrides: dict | None = None, seed: int = 0) -> VisionTransformer3D:
    """A ViT of `model_cfg`'s architecture for crops of `img_size` (default model_cfg.img_size).

    encoder_path None is the "random init" row (seeded). Otherwise weights load strictly into a ViT of
    the pre-training crop size; for another crop size everything but `pos_embed` is copied over (a fixed
    sin-cos table over integer grid coordinates, rebuilt for the new grid). `vit_overrides` (embed_dim,
    depth, num_heads, ...) go to `build_vit` on top of the `model_cfg.vit` preset.
    """
    pre_size = tuple(int(s) for s in model_cfg.img_size)
    img_size = tuple(int(s) for s in (img_size or pre_size))

    def make(size):
        torch.manual_seed(seed)
        return build_vit(model_cfg.vit, img_size=size, patch_size=tuple(model_cfg.patch_size),
                         pos_embed=model_cfg.pos_embed, **(vit_overrides or {}))

    encoder = make(img_size)
    if encoder_path is None:
        return encoder
    source = encoder if img_size == pre_size else make(pre_size)
    load_encoder_init(source, encoder_path)
    if source is not encoder:
        state = {k: v for k, v in source.state_dict().items() if k != "pos_embed"}
        missing, unexpected = encoder.load_state_dict(state, strict=False)
        if list(missing) != ["pos_embed"] or unexpected:
            raise ValueError(f"{encoder_path}: weights do not fit a {img_size} crop ({missing}, {unexpected})")
    return encoder


@torch.no_grad()
def patch_tokens(encoder: VisionTransformer3D, x: torch.Tensor) -> torch.Tensor:
    """x (B, 1, H, W, D) scaled HU -> (B, N, C): the last block's patch tokens (no CLS, no final norm)."""
    _, hidden = encoder.forward_features(x, return_hidden=True)
    return hidden[-1][:, 1:].float()


@torch.no_grad()
def pooled_features(encoder: VisionTransformer3D, x: torch.Tensor) -> torch.Tensor:
    """x (B, 1, H, W, D) scaled HU -> (B, C): mean of the last block's patch tokens (no CLS, no final norm)."""
    return patch_tokens(encoder, x).mean(dim=1)


@torch.no_grad()
def tiled_features(encoder: VisionTransformer3D, image: torch.Tensor, batch_size: int = 4,
                   pad_mode: str = PAD_MODE) -> torch.Tensor:
    """image (X, Y, Z) scaled HU, any size -> (C,): the whole-volume feature of view "tiles" (module
    docstring): per lattice cell the mean token over the tiles holding it, averaged over the cells
    weighted by their share of voxels inside the volume."""
    layout = tiling(image.shape, encoder.img_size, encoder.patch_size)
    inside = layout.inside_fraction()
    weights = torch.from_numpy(inside / layout.coverage() / inside.sum()).float()       # (*cells)
    device = next(encoder.parameters()).device
    grid = encoder.grid_size
    total = torch.zeros(encoder.embed_dim, dtype=torch.float64)
    for corners, tiles in tile_batches(image, layout, pad_mode, batch_size):
        tokens = patch_tokens(encoder, tiles.to(device)).cpu()                          # (B, N, C)
        w = torch.stack([weights[layout.cell_slices(c, grid)].reshape(-1) for c in corners])   # (B, N)
        total += torch.einsum("bn,bnc->c", w, tokens).double()
    return total.float()


def extract_features(encoder: VisionTransformer3D, volumes: Mapping[str, str], crop: Sequence[int] | None = None,
                     batch_size: int = 4, cache_path=None, progress: bool = True,
                     view: str = "center") -> tuple[list[str], torch.Tensor]:
    """Features of every volume {volume_id: preprocessed NIfTI path} -> (ids, (N, C) float32).

    view "center": centre crop of `crop` (default encoder.img_size); "tiles": the whole volume in tiles of
    the encoder's crop (`tiled_features`; `crop` must then be the encoder's). No masking, eval mode. With
    `cache_path`, a cache of this crop and view holding every requested id is reused; otherwise all are
    computed and the cache is (re)written atomically as {"ids", "features", "crop", "view"}. The cache
    must be specific to one encoder.
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}; got {view!r}")
    crop = tuple(int(s) for s in (crop or encoder.img_size))
    if view == "tiles" and crop != tuple(encoder.img_size):
        raise ValueError(f"view 'tiles' uses the encoder's crop {tuple(encoder.img_size)}, not {crop}")
    ids = list(volumes)
    if cache_path is not None and Path(cache_path).exists():
        cached = torch.load(cache_path, map_location="cpu", weights_only=True)
        where = {v: i for i, v in enumerate(cached["ids"])}
        if tuple(cached["crop"]) == crop and cached.get("view", "center") == view and all(v in where for v in ids):
            log.info("features: %d volumes from cache %s", len(ids), cache_path)
            return ids, cached["features"][[where[v] for v in ids]]
    encoder.eval()
    device = next(encoder.parameters()).device
    feats = []
    if view == "tiles":
        for v in tqdm(ids, desc="probe features (tiles)", disable=not progress):
            feats.append(tiled_features(encoder, load_volume(volumes[v])[0], batch_size)[None])
    else:
        transform = eval_transform(crop, pad_mode=PAD_MODE)
        for start in tqdm(range(0, len(ids), batch_size), desc="probe features", disable=not progress):
            batch = torch.stack([apply(transform, load_volume(volumes[v])) for v in ids[start:start + batch_size]])
            feats.append(pooled_features(encoder, batch.to(device)).cpu())
    features = torch.cat(feats) if feats else torch.zeros(0, encoder.embed_dim)
    if cache_path is not None:
        with atomic_path(cache_path) as tmp:
            torch.save({"ids": ids, "features": features, "crop": list(crop), "view": view}, tmp)
    return ids, features


def nested_fractions(train_ids: Sequence[str], patients: Sequence[str], fractions=(0.01, 0.1, 1.0), seed: int = 0,
                     labels: np.ndarray | None = None) -> dict[float, list[str]]:
    """Nested patient-level subsets of `train_ids` (patients[i] is the patient of train_ids[i]).

    Patients are shuffled once (seed); fraction f takes the first ceil(f * n_patients) of them (at least
    one), then, for each class (column of the (N, K) 0/1 `labels`) without a positive in the subset but
    with one in the full set, the next shuffled patient holding a positive; then the union with the
    next-smaller subset. So subsets are nested, every patient comes whole, and each has >= 1 positive per
    class where the full set has one; the top-ups can make a subset a few patients larger than f says.
    """
    if len(train_ids) != len(patients):
        raise ValueError(f"train_ids ({len(train_ids)}) and patients ({len(patients)}) differ in length")
    for f in fractions:
        if not 0.0 < f <= 1.0:
            raise ValueError(f"fractions must lie in (0, 1]; got {f}")
    order = list(dict.fromkeys(patients))
    np.random.default_rng(seed).shuffle(order)
    members: dict[str, list[int]] = {}
    for i, p in enumerate(patients):
        members.setdefault(p, []).append(i)
    positive = None if labels is None else {p: np.asarray(labels)[members[p]].max(axis=0) > 0 for p in order}
    chosen: set[str] = set()
    out = {}
    for f in sorted(fractions):
        chosen |= set(order[:max(1, math.ceil(f * len(order)))])
        if positive is not None:
            for k in range(np.asarray(labels).shape[1]):
                if not any(positive[p][k] for p in chosen):
                    extra = next((p for p in order if positive[p][k]), None)
                    if extra is not None:
                        chosen.add(extra)
        out[f] = sorted(train_ids[i] for p in chosen for i in members[p])
    return out


def probe_metrics(logits: torch.Tensor, targets: torch.Tensor, task: str, label_names: Sequence[str]) -> dict:
    """multilabel: {"mean_auroc", "auroc": {name: float | None}, "n_classes_unscored"}; multiclass: {"accuracy"}.

    A class whose targets hold one value only has no AUROC (None); mean_auroc is None if no class has one.
    """
    if task == "multiclass":
        return {"accuracy": float((logits.argmax(1) == targets).float().mean()) if len(targets) else None}
    per = dict(zip(label_names, auroc_per_class(logits.numpy(), targets.numpy())))
    scored = [v for v in per.values() if v is not None]
    return {"mean_auroc": float(np.mean(scored)) if scored else None, "auroc": per,
            "n_classes_unscored": len(per) - len(scored)}


def auroc_per_class(scores: np.ndarray, targets: np.ndarray) -> list[float | None]:
    """AUROC of each column of (N, K) scores against 0/1 targets (Mann-Whitney U, ties counted half, as
    sklearn's roc_auc_score); None where a column's targets hold one value. Vectorised: the probe
    validates often, and sklearn's per-call checks dominated its run time."""
    ranks = rankdata(scores, axis=0)                        # average ranks for ties
    pos = targets > 0.5
    n_pos, n_neg = pos.sum(0), (~pos).sum(0)
    u = (ranks * pos).sum(0) - n_pos * (n_pos + 1) / 2
    return [float(u[k] / (n_pos[k] * n_neg[k])) if n_pos[k] and n_neg[k] else None for k in range(scores.shape[1])]


def probabilities(logits: torch.Tensor, task: str) -> np.ndarray:
    """(N, K) logits -> float64 probabilities: sigmoid (multilabel) or softmax (multiclass)."""
    x = logits.double()
    return (torch.softmax(x, dim=1) if task == "multiclass" else torch.sigmoid(x)).numpy()


def main_statistic(task: str, labels, probs):
    """fn(volume indices) -> the probe's main metric on those (repeated) volumes: mean AUROC over the
    classes holding both labels there (multilabel; NaN if none), or accuracy (multiclass). For
    `ClusterBootstrap.stat`. labels (N, K) 0/1 (one-hot for multiclass), probs (N, K)."""
    labels, probs = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    if task == "multiclass":
        correct = (probs.argmax(1) == labels.argmax(1)).astype(np.float64)
        return lambda idx: float(correct[idx].mean()) if len(idx) else float("nan")

    # tie groups of each class's scores, ranked once: a resample only recounts positives and negatives per
    # group (bincount), so its AUROC costs no sort (Mann-Whitney U, ties counted half, as auroc_per_class)
    n, k = probs.shape
    groups = (rankdata(probs, method="dense", axis=0).astype(np.int64) - 1) + np.arange(k) * n     # (N, K)
    positive = labels > 0.5

    def mean_auroc(idx):
        g, pos = groups[idx].ravel(), positive[idx].ravel()
        n_pos = np.bincount(g[pos], minlength=n * k).reshape(k, n).astype(np.float64)
        n_neg = np.bincount(g[~pos], minlength=n * k).reshape(k, n).astype(np.float64)
        below = np.cumsum(n_neg, axis=1) - n_neg                          # negatives scored lower
        u = (n_pos * (below + 0.5 * n_neg)).sum(1)
        tot_pos, tot_neg = n_pos.sum(1), n_neg.sum(1)
        ok = (tot_pos > 0) & (tot_neg > 0)
        return float(np.mean(u[ok] / (tot_pos[ok] * tot_neg[ok]))) if ok.any() else float("nan")
    return mean_auroc


def per_volume_record(volume_ids: Sequence[str], patient_ids: Sequence[str], labels: np.ndarray, logits: torch.Tensor,
                task: str, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> tuple[dict, dict]:
    """(per_volume, intervals) for a fraction's "test" (module docstring)."""
    probs = probabilities(logits, task)
    key = "accuracy" if task == "multiclass" else "mean_auroc"
    boot = ClusterBootstrap(list(patient_ids), n_boot=n_boot, seed=seed)
    interval = boot.stat(main_statistic(task, labels, probs))
    per_volume = {"volume_id": list(volume_ids), "patient_id": list(patient_ids),
                  "labels": np.asarray(labels).astype(int).tolist(), "probabilities": probs.tolist()}
    return per_volume, {key: interval}


def _main_metric(metrics: dict) -> float:
    value = metrics["accuracy"] if "accuracy" in metrics else metrics["mean_auroc"]
    return -math.inf if value is None else value


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


def split_ids(manifest: pd.DataFrame, protocol: str = "holdout", val_fraction: float = 0.1,
              seed: int = 42) -> dict[str, list[str]]:
    """{"train", "val", "test": volume ids} by patient; see the module docstring for the protocols."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}; got {protocol!r}")
    by = {s: manifest[manifest["split"] == s] for s in ("train", "val", "test")}
    if by["test"].empty:
        raise ValueError("the manifest has no 'test' rows to report on")
    if protocol == "val_is_test":
        train = pd.concat([by["train"], by["val"]])
        return {"train": list(train["volume_id"]), "val": list(by["test"]["volume_id"]),
                "test": list(by["test"]["volume_id"])}
    train, val = by["train"], by["val"]
    if val.empty:                                   # official lists have none: hold out patients
        patients = sorted(set(train["patient_id"]))
        np.random.default_rng(seed).shuffle(patients)
        held = set(patients[:max(1, round(val_fraction * len(patients)))])
        val, train = train[train["patient_id"].isin(held)], train[~train["patient_id"].isin(held)]
    return {"train": list(train["volume_id"]), "val": list(val["volume_id"]), "test": list(by["test"]["volume_id"])}


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


def encoder_tag(encoder_path, seed: int, model_cfg=None, vit_overrides: dict | None = None) -> str:
    """Cache key: `<encoder folder>-<hash of the file's bytes>`, or `random-<hash of architecture and seed>`."""
    if encoder_path is None:
        arch = [getattr(model_cfg, k, None) for k in ("vit", "img_size", "patch_size", "pos_embed")]
        text = json.dumps([arch, vit_overrides or {}, seed], sort_keys=True, default=str)
        return f"random-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    with open(encoder_path, "rb") as handle:                 # streamed: ViT-B weights are ~350 MB
        digest = hashlib.file_digest(handle, "sha256").hexdigest()[:16]
    return f"{Path(encoder_path).parent.name}-{digest}"


def evaluate_probe(cfg, encoder_path, run_dir, out_json, fractions=(0.01, 0.1, 1.0), label_names=None,
                   task: str = "multilabel", protocol: str = "holdout", crop: Sequence[int] | None = None,
                   steps: int = 1000, batch_size: int = 32, lr: float = 1.5e-3, seed: int = 0,
                   cache_dir=None, vit_overrides: dict | None = None, progress: bool = True,
                   view: str | None = None, n_boot: int = N_BOOT) -> dict:
    """Linear probe of one encoder at each data fraction -> metrics JSON at out_json (atomic); returns it.

    Reads <run_dir>/manifest.csv, qc.csv and preprocessed/volumes/. encoder_path None = random init.
    view: "tiles" | "center" (None: cfg.probe.view). Features are cached under cache_dir (default
    <out_json dir>/features/<encoder tag>-<view>.pt).
    """
    view = view or getattr(getattr(cfg, "probe", None), "view", "tiles")
    run_dir, out_json = Path(run_dir), Path(out_json)
    manifest = read_manifest(run_dir / "manifest.csv")
    ok = set(pd.read_csv(run_dir / "qc.csv", usecols=["volume_id"], dtype=str)["volume_id"])
    vol_dir = run_dir / "preprocessed" / "volumes"
    manifest = manifest[manifest["volume_id"].isin(ok)
                        & manifest["volume_id"].map(lambda v: (vol_dir / f"{v}.nii.gz").exists())]
    splits = split_ids(manifest, protocol, cfg.data.val_fraction, cfg.data.split_seed)
    encoder = build_encoder(cfg.model, crop, encoder_path, vit_overrides, seed)
    tag = encoder_tag(encoder_path, seed, cfg.model, vit_overrides)
    cache = Path(cache_dir or out_json.parent / "features") / f"{tag}-{view}.pt"
    wanted = list(dict.fromkeys(v for s in ("train", "val", "test") for v in splits[s]))
    ids, feats = extract_features(encoder, {v: str(vol_dir / f"{v}.nii.gz") for v in wanted},
                                  crop, cache_path=cache, progress=progress, view=view)
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
    write_json_atomic(out_json, metrics)
    return metrics
