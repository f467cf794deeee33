"""What the zero-shot, retrieval and grounding tasks share: the model, the test volumes, their features.

A run directory as the earlier steps leave it: manifest.csv, qc.csv, sentences.jsonl,
preprocessed/volumes/<id>.nii.gz and (synthetic corpus) preprocessed/masks/<id>.lesion.nii.gz.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from simcrop.config import Config
from simcrop.data.datasets import PretrainDataset
from simcrop.data.manifest import labels_of, read_manifest
from simcrop.evaluate.embed import cached_volume_features, feature_kind, load_model

log = logging.getLogger(__name__)


@dataclass
class Context:
    """A loaded model and the features of the volumes a task evaluates.

    items: one dict per volume (volume_id, scan_id, path, and per task: labels or report fields);
    patches: (V, N, D) float32 normalised, row v ↔ items[v]; k: patches pooled per sentence.
    """
    model: nn.Module
    model_cfg: Config
    kind: str
    items: list[dict]
    patches: torch.Tensor | None = None
    k: int = 1
    info: dict = field(default_factory=dict)


def report_items(run_dir, split: str, crop) -> list[dict]:
    """Volumes of `split` that passed QC and have Findings sentences, as PretrainDataset keeps them:
    {volume_id, scan_id, path, findings, impressions, sentences}."""
    run_dir = Path(run_dir)
    dataset = PretrainDataset(run_dir / "manifest.csv", run_dir / "sentences.jsonl", run_dir / "preprocessed",
                              run_dir / "qc.csv", split=split, crop_size=crop, augment=False)
    return [dict(item) for item in dataset.items]


def labelled_items(run_dir, split: str) -> list[dict]:
    """Volumes of `split` that passed QC, exist on disk and carry labels: {volume_id, scan_id, path, labels}."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir / "manifest.csv")
    ok = set(pd.read_csv(run_dir / "qc.csv", usecols=["volume_id"], dtype=str)["volume_id"])
    items = []
    for row in manifest[manifest["split"] == split].to_dict("records"):
        path = run_dir / "preprocessed" / "volumes" / f"{row['volume_id']}.nii.gz"
        labels = labels_of(row)
        if row["volume_id"] in ok and labels and path.exists():
            items.append({"volume_id": row["volume_id"], "scan_id": row["scan_id"], "path": str(path),
                          "labels": labels})
    return items


def lesion_mask_path(run_dir, volume_id: str) -> Path:
    return Path(run_dir) / "preprocessed" / "masks" / f"{volume_id}.lesion.nii.gz"


def load_context(checkpoint, device: str = "cpu", text_encoder=None) -> Context:
    """Model from the checkpoint; NotApplicableError (before any volume is read) when it has no text side."""
    model, model_cfg = load_model(checkpoint, device, text_encoder)
    return Context(model=model, model_cfg=model_cfg, kind=feature_kind(model), items=[])


def add_features(ctx: Context, checkpoint, run_dir, items: list[dict], topk: int | None = None,
                 cache_dir=None, batch_size: int = 2, progress: bool = True) -> Context:
    """Encode `items` (centre crop of the model's img_size) into ctx.patches; k = topk (default: the
    model's), clamped to N. cache_dir None: `<run_dir>/cache/features`; False: no cache."""
    if not items:
        raise ValueError(f"{run_dir}: no volume to evaluate")
    if cache_dir is None:
        cache_dir = Path(run_dir) / "cache" / "features"
    pad_mode = ctx.model_cfg.pretrain.pad_mode
    ctx.items = items
    ctx.patches = cached_volume_features(ctx.model, checkpoint, [it["path"] for it in items],
                                         cache_dir or None, batch_size=batch_size, pad_mode=pad_mode,
                                         progress=progress)
    n = ctx.patches.shape[1]
    want = int(topk or ctx.model_cfg.model.topk)
    ctx.k = min(want, n)
    if ctx.k != want:
        log.warning("topk %d exceeds the %d patches per volume; using %d", want, n, ctx.k)
    ctx.info = {"objective": ctx.model_cfg.model.objective, "feature_kind": ctx.kind, "k": ctx.k,
                "patches_per_volume": n, "n_volumes": len(items), "checkpoint": str(checkpoint)}
    return ctx
