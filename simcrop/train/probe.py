"""Linear probe on a frozen encoder (method.md §5), as the official `Classification_Linear` does it.

Feature: mean of the patch tokens (CLS excluded) of the last block's output, before the encoder's
final LayerNorm: the official model is MAE's `global_pool=True` ViT, which drops `norm` for `fc_norm`.
Head: LayerNorm without affine (the official `fc_norm` stays at its identity init, since it runs under
no_grad) -> Linear (weights trunc-normal std 2e-5, zero bias). Features are computed once per encoder on
the deterministic centre crop (`eval_transform`, no masking) and cached atomically.

Splits (patient level, from the manifest): `protocol="holdout"` (default) trains on `train`, picks
the epoch on `val` and reports on `test`; a manifest without `val` rows gets val_fraction of the
train patients held out. `protocol="val_is_test"` is the official protocol: train on train + val,
pick the epoch on `test`, report on `test` (optimistic; for comparison with published numbers only).

Multi-label (CT-RATE, RadChestCT): BCE; metrics per-class AUROC and their mean over classes whose
test labels hold both values (others are null and counted in `n_classes_unscored`). Multi-class
(CC-CCII): the manifest's labels are one-hot over the classes; cross-entropy; accuracy.
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
from simcrop.io import atomic_path, write_json_atomic
from simcrop.model.vit3d import VisionTransformer3D, build_vit
from simcrop.train.export import load_encoder_init
from simcrop.train.optim import build_optimizer, build_scheduler, clip_gradients

log = logging.getLogger(__name__)
PROTOCOLS = ("holdout", "val_is_test")
TASKS = ("multilabel", "multiclass")


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
def pooled_features(encoder: VisionTransformer3D, x: torch.Tensor) -> torch.Tensor:
    """x (B, 1, H, W, D) scaled HU -> (B, C): mean of the last block's patch tokens (no CLS, no final norm)."""
    _, hidden = encoder.forward_features(x, return_hidden=True)
    return hidden[-1][:, 1:].mean(dim=1).float()


def extract_features(encoder: VisionTransformer3D, volumes: Mapping[str, str], crop: Sequence[int] | None = None,
                     batch_size: int = 4, cache_path=None, progress: bool = True) -> tuple[list[str], torch.Tensor]:
    """Features of every volume {volume_id: preprocessed NIfTI path} -> (ids, (N, C) float32).

    Centre crop of `crop` (default encoder.img_size), no masking, eval mode. With `cache_path`, a cache
    holding every requested id for this crop is reused; otherwise all are computed and the cache is
    (re)written atomically as {"ids", "features", "crop"}. The cache must be specific to one encoder.
    """
    crop = tuple(int(s) for s in (crop or encoder.img_size))
    ids = list(volumes)
    if cache_path is not None and Path(cache_path).exists():
        cached = torch.load(cache_path, map_location="cpu", weights_only=True)
        where = {v: i for i, v in enumerate(cached["ids"])}
        if tuple(cached["crop"]) == crop and all(v in where for v in ids):
            log.info("features: %d volumes from cache %s", len(ids), cache_path)
            return ids, cached["features"][[where[v] for v in ids]]
    transform = eval_transform(crop, pad_mode="constant")
    encoder.eval()
    device = next(encoder.parameters()).device
    feats = []
    for start in tqdm(range(0, len(ids), batch_size), desc="probe features", disable=not progress):
        batch = torch.stack([apply(transform, load_volume(volumes[v])) for v in ids[start:start + batch_size]])
        feats.append(pooled_features(encoder, batch.to(device)).cpu())
    features = torch.cat(feats) if feats else torch.zeros(0, encoder.embed_dim)
    if cache_path is not None:
        with atomic_path(cache_path) as tmp:
            torch.save({"ids": ids, "features": features, "crop": list(crop)}, tmp)
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
                   cache_dir=None, vit_overrides: dict | None = None, progress: bool = True) -> dict:
    """Linear probe of one encoder at each data fraction -> metrics JSON at out_json (atomic); returns it.

    Reads <run_dir>/manifest.csv, qc.csv and preprocessed/volumes/. encoder_path None = random init.
    Features are cached under cache_dir (default <out_json dir>/features/<encoder tag>.pt).
    """
    run_dir, out_json = Path(run_dir), Path(out_json)
    manifest = read_manifest(run_dir / "manifest.csv")
    ok = set(pd.read_csv(run_dir / "qc.csv", usecols=["volume_id"], dtype=str)["volume_id"])
    vol_dir = run_dir / "preprocessed" / "volumes"
    manifest = manifest[manifest["volume_id"].isin(ok)
                        & manifest["volume_id"].map(lambda v: (vol_dir / f"{v}.nii.gz").exists())]
    splits = split_ids(manifest, protocol, cfg.data.val_fraction, cfg.data.split_seed)
    encoder = build_encoder(cfg.model, crop, encoder_path, vit_overrides, seed)
    tag = encoder_tag(encoder_path, seed, cfg.model, vit_overrides)
    cache = Path(cache_dir or out_json.parent / "features") / f"{tag}.pt"
    wanted = list(dict.fromkeys(v for s in ("train", "val", "test") for v in splits[s]))
    ids, feats = extract_features(encoder, {v: str(vol_dir / f"{v}.nii.gz") for v in wanted},
                                  crop, cache_path=cache, progress=progress)
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
            test = probe_metrics(head(test_x), test_y, task, names)
        results[f"{100 * f:g}"] = {"fraction": f, "n_train": len(subset),
                                   "n_train_patients": len({patients[v] for v in subset}),
                                   "best_epoch": info["best_epoch"], "val_metric": info["val_metric"], "test": test}
        log.info("probe %s %g%%: n_train %d, val %s, test %s", tag, 100 * f, len(subset), info["val_metric"],
                 {k: v for k, v in test.items() if k != "auroc"})
    metrics = {"task": task, "protocol": protocol, "encoder": str(encoder_path) if encoder_path else "random",
               "label_names": names, "feature_dim": int(feats.shape[1]),
               "crop": list(crop or encoder.img_size), "steps": steps, "lr": lr, "seed": seed,
               "n": {s: len(splits[s]) for s in ("train", "val", "test")}, "fractions": results}
    write_json_atomic(out_json, metrics)
    return metrics
