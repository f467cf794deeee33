"""Downstream metrics: AUROC, accuracy, retrieval recall@k / MAP, Dice without background.

Plain functions over numpy/torch arrays; every result is a dict of Python floats (NaN where a value is
undefined) so the callers can write it to JSON (`json_safe` turns NaN into null).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch


def auroc(y_true, y_score, names: Sequence[str] | None = None) -> dict:
    """Per-class and mean AUROC (scikit-learn's `roc_auc_score`, one class at a time).

    y_true (n, C) {0, 1}; y_score (n, C) float, higher = more likely positive. A class whose column holds
    one value only has no AUROC: it is NaN in `per_class`, listed in `excluded` and left out of `mean`.
    Returns {"per_class": {name: float}, "mean": float (NaN when every class is excluded),
    "n_classes": classes in the mean, "excluded": [names], "positives": {name: int}}.
    """
    from sklearn.metrics import roc_auc_score

    y_true, y_score = np.asarray(y_true), np.asarray(y_score, dtype=float)
    if y_true.ndim == 1:
        y_true, y_score = y_true[:, None], y_score[:, None]
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true {y_true.shape} and y_score {y_score.shape} must have the same shape (n, C)")
    names = list(names) if names is not None else [str(c) for c in range(y_true.shape[1])]
    if len(names) != y_true.shape[1]:
        raise ValueError(f"{len(names)} class names for {y_true.shape[1]} columns")
    per_class, excluded = {}, []
    for c, name in enumerate(names):
        column = y_true[:, c]
        if len(np.unique(column)) < 2:
            per_class[name] = float("nan")
            excluded.append(name)
        else:
            per_class[name] = float(roc_auc_score(column, y_score[:, c]))
    kept = [v for v in per_class.values() if not math.isnan(v)]
    return {"per_class": per_class, "mean": float(np.mean(kept)) if kept else float("nan"),
            "n_classes": len(kept), "excluded": excluded,
            "positives": {name: int(y_true[:, c].sum()) for c, name in enumerate(names)}}


def accuracy(y_true, y_pred) -> float:
    """Fraction of equal entries; y_true, y_pred (n,) class indices."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must be equal and non-empty")
    return float((y_true == y_pred).mean())


def relevance_from_ids(query_ids: Sequence[str], item_ids: Sequence[str]) -> np.ndarray:
    """(Q, C) bool: item c is relevant to query q when they share an id (e.g. scan_id: the
    reconstructions of one scan share its report)."""
    return np.asarray(query_ids, dtype=object)[:, None] == np.asarray(item_ids, dtype=object)[None, :]


def retrieval_metrics(scores, relevant, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Recall@k and mean average precision of ranking items per query.

    scores (Q, C) float, higher = better match; relevant (Q, C) bool, several relevant items allowed.
    Items are ranked by descending score, ties broken by item index (stable sort), so ties neither help
    nor hurt systematically.
    recall@k: fraction of queries with at least one relevant item among the first min(k, C) items.
    AP(q) = (1 / R_q) Σ_{relevant ranks r} precision@r; MAP = mean over queries. Queries with no
    relevant item are left out (counted in `queries_without_relevant`).
    chance_recall@k: the expected recall@k of a random ranking, mean over queries of
    1 - C(C - R_q, k) / C(C, k) (R_q relevant items of C).
    Returns {"recall@k": float ..., "chance_recall@k": float ..., "map": float, "n_queries": int,
    "n_items": C, "queries_without_relevant": int}.
    """
    scores = torch.as_tensor(np.asarray(scores, dtype=np.float64))
    relevant = torch.as_tensor(np.asarray(relevant, dtype=bool))
    if scores.shape != relevant.shape or scores.dim() != 2:
        raise ValueError(f"scores {tuple(scores.shape)} and relevant {tuple(relevant.shape)} must both be (Q, C)")
    has = relevant.any(dim=1)
    scores, relevant = scores[has], relevant[has]
    Q, C = relevant.shape
    out = {"n_queries": int(Q), "n_items": int(C), "queries_without_relevant": int((~has).sum())}
    if Q == 0:
        undefined = {f"{m}@{k}": float("nan") for k in ks for m in ("recall", "chance_recall")}
        return dict(out, map=float("nan"), **undefined)
    order = torch.sort(-scores, dim=1, stable=True).indices                    # (Q, C)
    hits = torch.gather(relevant, 1, order).double()                             # (Q, C) 1 at relevant ranks
    for k in ks:
        if k < 1:
            raise ValueError(f"recall@k needs k >= 1; got {k}")
        out[f"recall@{k}"] = float(hits[:, :min(k, C)].any(dim=1).double().mean())
        out[f"chance_recall@{k}"] = float(np.mean([_chance_hit(C, int(r), min(k, C)) for r in relevant.sum(1)]))
    precision = hits.cumsum(1) / torch.arange(1, C + 1, dtype=torch.float64)   # (Q, C) precision@r
    ap = (precision * hits).sum(1) / hits.sum(1)
    out["map"] = float(ap.mean())
    return out


def _chance_hit(n_items: int, n_relevant: int, k: int) -> float:
    """P(at least one of n_relevant items among k drawn without replacement from n_items)."""
    miss = 1.0
    for i in range(k):
        miss *= max(n_items - n_relevant - i, 0) / (n_items - i)
    return 1.0 - miss


def dice_per_class(pred, target, num_classes: int, names: Sequence[str] | None = None) -> dict:
    """Dice of label maps per foreground class (MONAI `DiceMetric`, background excluded).

    pred, target (B, X, Y, Z) int class indices 0..num_classes-1 (0 = background). A class absent from
    a target contributes NaN for that sample (MONAI `ignore_empty`) and is skipped in its mean.
    Returns {"per_class": {name: float}, "mean": mean over classes with a value}.
    """
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    pred, target = torch.as_tensor(pred).long(), torch.as_tensor(target).long()
    if pred.shape != target.shape or pred.dim() < 2:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must be equal (B, *spatial)")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + one class); got {num_classes}")
    names = list(names) if names is not None else [str(c) for c in range(1, num_classes)]
    if len(names) != num_classes - 1:
        raise ValueError(f"{len(names)} names for {num_classes - 1} foreground classes")
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    values = metric(one_hot(pred[:, None], num_classes), one_hot(target[:, None], num_classes))  # (B, C-1)
    per_class = {}
    for c, name in enumerate(names):
        column = values[:, c]
        column = column[~torch.isnan(column)]
        per_class[name] = float(column.mean()) if column.numel() else float("nan")
    kept = [v for v in per_class.values() if not math.isnan(v)]
    return {"per_class": per_class, "mean": float(np.mean(kept)) if kept else float("nan")}


def json_safe(obj):
    """NaN / inf floats → None, numpy scalars → Python, recursively (strict JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
