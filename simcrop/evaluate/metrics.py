"""Downstream metrics, the one home of each: AUROC, accuracy, retrieval recall@k / MAP, Dice without background.

Plain functions over numpy/torch arrays; every result is a dict of Python floats.
Undefined values (a class with one label value only, no scored class, an empty split) are NaN in memory,
and `json_safe` writes them as null; every writer passes its results through it.
One JSON key per summary: `MEAN_AUROC` ("mean_auroc"), `ACCURACY` ("accuracy"), `MEAN_DICE` ("mean_dice").

AUROC is computed once, by ranks (`auroc_per_class`: Mann-Whitney U, ties counted half): it equals
scikit-learn's `roc_auc_score` to within 2.2e-16 and is vectorised (the probe validates often, and
sklearn's per-call checks dominated its run time).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from scipy.stats import rankdata

MEAN_AUROC = "mean_auroc"
ACCURACY = "accuracy"
MEAN_DICE = "mean_dice"


def auroc_per_class(scores, targets) -> list[float]:
    """AUROC of each column of (N, K) scores against 0/1 targets (Mann-Whitney U, ties counted half, as
    sklearn's roc_auc_score); NaN where a column's targets hold one value."""
    scores, targets = np.asarray(scores), np.asarray(targets)
    ranks = rankdata(scores, axis=0)                        # average ranks for ties
    pos = targets > 0.5
    n_pos, n_neg = pos.sum(0), (~pos).sum(0)
    u = (ranks * pos).sum(0) - n_pos * (n_pos + 1) / 2
    return [float(u[k] / (n_pos[k] * n_neg[k])) if n_pos[k] and n_neg[k] else float("nan")
            for k in range(scores.shape[1])]


def multilabel_metrics(scores, targets, names: Sequence[str]) -> dict:
    """{MEAN_AUROC: mean over the scored classes (NaN if none), "auroc": {name: float}, "n_classes_unscored"}:
    what the probe writes per split."""
    per = dict(zip(names, auroc_per_class(scores, targets)))
    scored = [v for v in per.values() if not math.isnan(v)]
    return {MEAN_AUROC: float(np.mean(scored)) if scored else float("nan"), "auroc": per,
            "n_classes_unscored": len(per) - len(scored)}


def auroc(y_true, y_score, names: Sequence[str] | None = None) -> dict:
    """Per-class and mean AUROC (`auroc_per_class`), with class counts (zero-shot).

    y_true (n, C) {0, 1}; y_score (n, C) float, higher = more likely positive. A class whose column holds
    one value only has no AUROC: it is NaN in `per_class`, listed in `excluded` and left out of `mean`.
    Returns {"per_class": {name: float}, "mean": float (NaN when every class is excluded),
    "n_classes": classes in the mean, "excluded": [names], "positives": {name: int}}.
    """
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, dtype=float)
    if y_true.ndim == 1:
        y_true, y_score = y_true[:, None], y_score[:, None]
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true {y_true.shape} and y_score {y_score.shape} must have the same shape (n, C)")
    names = list(names) if names is not None else [str(c) for c in range(y_true.shape[1])]
    if len(names) != y_true.shape[1]:
        raise ValueError(f"{len(names)} class names for {y_true.shape[1]} columns")
    per_class = dict(zip(names, auroc_per_class(y_score, y_true)))
    excluded = [name for name, v in per_class.items() if math.isnan(v)]
    kept = [v for v in per_class.values() if not math.isnan(v)]
    return {"per_class": per_class, "mean": float(np.mean(kept)) if kept else float("nan"),
            "n_classes": len(kept), "excluded": excluded,
            "positives": {name: int(y_true[:, c].sum()) for c, name in enumerate(names)}}


def accuracy(y_true, y_pred) -> float:
    """Fraction of equal entries; y_true, y_pred (n,) class indices; NaN when n = 0.

    Computed in float32 (k / n rounded to float32), as the probe has always reported it: a float64 mean
    would change the published accuracies in the 8th digit. (The bootstrap's resampled accuracies are
    float64; their percentiles are unaffected at that precision.)
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must be equal")
    return float(torch.from_numpy(y_true == y_pred).float().mean()) if y_true.size else float("nan")


def bootstrap_statistic(task: str, labels, probs):
    """fn(volume indices) -> the main metric on those (repeated) volumes: mean AUROC over the classes holding
    both labels there (multilabel; NaN if none), or accuracy (multiclass; NaN if empty). For
    `ClusterBootstrap.stat`. labels (N, K) 0/1 (one-hot for multiclass), probs (N, K). Same values as
    `auroc_per_class` / `accuracy` on the resample."""
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


class DiceAccumulator:
    """Dice per foreground class over volumes added one at a time (segmentation's sliding-window eval):
    MONAI `DiceMetric(include_background=False)`, each class averaged over the volumes whose ground truth
    holds it (`ignore_empty`). A class absent from every ground truth has no score (NaN), not MONAI's 0."""

    def __init__(self, names: Sequence[str]):
        from monai.metrics import DiceMetric

        self.names = list(names)
        self.metric = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=True,
                                 get_not_nans=True)
        self.n = 0

    def add(self, pred, target) -> None:
        """pred, target (B, 1, *spatial) int class indices 0..len(names) (0 = background)."""
        from monai.networks.utils import one_hot

        n_classes = len(self.names) + 1
        self.metric(y_pred=one_hot(torch.as_tensor(pred), n_classes), y=one_hot(torch.as_tensor(target), n_classes))
        self.n += 1

    def result(self) -> dict:
        """{MEAN_DICE: mean over the scored classes (NaN if none), "dice": {name: float}}."""
        if self.n:
            per, scored_volumes = self.metric.aggregate()
            per, scored_volumes = per.tolist(), scored_volumes.tolist()
        else:
            per, scored_volumes = [0.0] * len(self.names), [0] * len(self.names)
        dice = {name: (float(v) if n > 0 else float("nan")) for name, v, n in zip(self.names, per, scored_volumes)}
        scored = [v for v in dice.values() if not math.isnan(v)]
        return {MEAN_DICE: float(np.mean(scored)) if scored else float("nan"), "dice": dice}


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
