"""Zero-shot classification: one positive and one negative prompt per label, scored against each volume.

    score(v, label) = S(pos prompt, v) - S(neg prompt, v),   S(s, v) = mean of the top-K cosines of
                                                             sentence s against the patches of volume v

(`simcrop_kernels.topk_similarity`, mode "all"). The two-way softmax at temperature τ,
p = exp(S+/τ) / (exp(S+/τ) + exp(S-/τ)) = sigmoid((S+ - S-)/τ), is a monotone function of the
difference, so it ranks volumes identically and gives the same AUROC; we report the difference.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from simcrop_kernels import topk_similarity
from simcrop.evaluate.cases import add_features, labelled_items, load_context
from simcrop.evaluate.embed import encode_sentences
from simcrop.evaluate.metrics import MEAN_AUROC, auroc, json_safe
from simcrop.io import write_json_atomic

log = logging.getLogger(__name__)

POSITIVE_TEMPLATE = "{label} is present."
NEGATIVE_TEMPLATE = "{label} is not present."


def prompts(labels: Sequence[str], positive_template: str = POSITIVE_TEMPLATE,
            negative_template: str = NEGATIVE_TEMPLATE) -> tuple[list[str], list[str]]:
    """Positive and negative prompt per label; templates use the `{label}` placeholder."""
    for name, template in (("positive", positive_template), ("negative", negative_template)):
        if "{label}" not in template:
            raise ValueError(f"zero-shot {name} template must contain '{{label}}'; got {template!r}")
    return ([positive_template.format(label=label) for label in labels],
            [negative_template.format(label=label) for label in labels])


def zeroshot_scores(positive: torch.Tensor, negative: torch.Tensor, patches: torch.Tensor, k: int,
                    backend: str = "auto") -> torch.Tensor:
    """positive, negative (L, D) prompt features; patches (V, N, D); all normalised → (V, L) float32
    score S+ - S- per volume and label."""
    if positive.shape != negative.shape:
        raise ValueError(f"positive {tuple(positive.shape)} and negative {tuple(negative.shape)} prompts differ")
    n_labels = positive.shape[0]
    score = topk_similarity(torch.cat([positive, negative]), patches, k, mode="all", return_pooled=False,
                            backend=backend).score                                     # (2L, V)
    return (score[:n_labels] - score[n_labels:]).T.contiguous()


def label_matrix(items: list[dict], names: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """(V, L) int {0, 1} from each item's `labels` dict; names default to the sorted union of keys.
    A label missing from an item counts as absent (0)."""
    if names is None:
        names = sorted({name for item in items for name in item["labels"]})
    y = np.array([[int(item["labels"].get(name, 0)) for name in names] for item in items], dtype=np.int64)
    return y, list(names)


def evaluate_zeroshot(cfg, checkpoint, run_dir, out_json, *, split: str = "test",
                      positive_template: str = POSITIVE_TEMPLATE, negative_template: str = NEGATIVE_TEMPLATE,
                      topk: int | None = None, batch_size: int = 2, cache_dir=None, device: str = "cpu",
                      progress: bool = True, text_encoder=None) -> dict:
    """Zero-shot AUROC per label and mean over the labelled volumes of `split`; writes `out_json`.

    cfg: the run's Config (reserved for the evaluate config keys; the model comes from the checkpoint's
    own saved config). topk: patches pooled per prompt (default: the checkpoint's model.topk).
    Raises NotApplicableError for a model without a text side (MAE).
    """
    ctx = load_context(checkpoint, device, text_encoder)
    items = labelled_items(run_dir, split)
    if not items:
        raise ValueError(f"{run_dir}: no labelled {split!r} volumes that passed QC: nothing to classify")
    add_features(ctx, checkpoint, run_dir, items, topk, cache_dir, batch_size, progress)
    y, names = label_matrix(items)
    positive, negative = prompts(names, positive_template, negative_template)
    max_tokens = ctx.model_cfg.model.text_max_tokens
    pos = encode_sentences(ctx.model, positive, max_tokens=max_tokens)
    neg = encode_sentences(ctx.model, negative, max_tokens=max_tokens)
    scores = zeroshot_scores(pos.to(device), neg.to(device), ctx.patches.to(device), ctx.k).cpu()
    result = auroc(y, scores.numpy(), names)
    metrics = {"task": "zeroshot", "applicable": True, "split": split, **ctx.info,
               "templates": {"positive": positive_template, "negative": negative_template},
               MEAN_AUROC: result["mean"], "auroc": result["per_class"], "n_labels": result["n_classes"],
               "excluded_labels": result["excluded"], "positives": result["positives"]}
    write_json_atomic(Path(out_json), json_safe(metrics))
    log.info("zero-shot %s: mean AUROC %.3f over %d labels (%d excluded), %d volumes", split, result["mean"],
             result["n_classes"], len(result["excluded"]), len(items))
    return metrics
