"""What the zero-shot, retrieval and grounding tasks share: the model, the test volumes, their features.

A run directory as the earlier steps leave it: manifest.csv, qc.csv, sentences.jsonl,
preprocessed/volumes/<id>.nii.gz and (synthetic corpus) preprocessed/masks/<id>.lesion.nii.gz.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from simcrop import layout
from simcrop.config import Config
from simcrop.data.datasets import EmptyDatasetError
from simcrop.data.manifest import labels_of
from simcrop.data.selection import usable_volumes
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


def report_items(run_dir, split: str, crop=None) -> list[dict]:
    """Volumes of `split` that passed QC, exist and have Findings sentences (the pre-training dataset's
    selection): {volume_id, scan_id, path, findings, impressions, sentences}. `crop` is not used (kept for
    callers; the features are cropped in `add_features`)."""
    selection = usable_volumes(run_dir, split, sentences=True)
    items = [{"volume_id": str(row["volume_id"]), "scan_id": str(row["scan_id"]),
              "path": selection.paths[str(row["volume_id"])], "findings": row["findings"],
              "impressions": row["impressions"], "sentences": selection.sentences[str(row["volume_id"])]}
             for row in selection.rows()]
    if not items:
        raise EmptyDatasetError(f"no {split!r} volumes in {run_dir}: {selection.in_split} in the split; "
                                f"dropped {selection.summary()}")
    return items


def labelled_items(run_dir, split: str) -> list[dict]:
    """Volumes of `split` that passed QC, exist on disk and carry labels: {volume_id, scan_id, path, labels}."""
    selection = usable_volumes(run_dir, split, labels=True)
    return [{"volume_id": row["volume_id"], "scan_id": row["scan_id"], "path": selection.paths[str(row["volume_id"])],
             "labels": labels_of(row)} for row in selection.rows()]


def lesion_mask_path(run_dir, volume_id: str) -> Path:
    return layout.DataDir(run_dir).preprocessed.mask(volume_id, "lesion")


def load_context(checkpoint, device: str = "cpu", text_encoder=None) -> Context:
    """Model from the checkpoint; NotApplicableError (before any volume is read) when it has no text side."""
    model, model_cfg = load_model(checkpoint, device, text_encoder)
    return Context(model=model, model_cfg=model_cfg, kind=feature_kind(model), items=[])


def add_features(ctx: Context, checkpoint, run_dir, items: list[dict], topk: int | None = None,
                 cache_dir=None, batch_size: int = 2, progress: bool = True) -> Context:
    """Encode `items` (centre crop of the model's img_size) into ctx.patches; k = topk (default: the
    model's), clamped to N. cache_dir None: the run's feature cache (`layout.Run.feature_cache`); False: no
    cache. HU are scaled by the checkpoint's preprocess.hu_window."""
    if not items:
        raise ValueError(f"{run_dir}: no volume to evaluate")
    if cache_dir is None:
        cache_dir = layout.Run(run_dir).feature_cache
    pad_mode = ctx.model_cfg.pretrain.pad_mode
    ctx.items = items
    ctx.patches = cached_volume_features(ctx.model, checkpoint, [it["path"] for it in items],
                                         cache_dir or None, batch_size=batch_size, pad_mode=pad_mode,
                                         progress=progress, hu_window=ctx.model_cfg.preprocess.hu_window)
    n = ctx.patches.shape[1]
    want = int(topk or ctx.model_cfg.model.topk)
    ctx.k = min(want, n)
    if ctx.k != want:
        log.warning("topk %d exceeds the %d patches per volume; using %d", want, n, ctx.k)
    ctx.info = {"objective": ctx.model_cfg.model.objective, "feature_kind": ctx.kind, "k": ctx.k,
                "patches_per_volume": n, "n_volumes": len(items), "checkpoint": str(checkpoint)}
    return ctx
