"""Metric functions against scikit-learn and hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score, top_k_accuracy_score

from simcrop.evaluate.metrics import (accuracy, auroc, dice_per_class, json_safe, relevance_from_ids,
                                      retrieval_metrics)


def test_auroc_matches_sklearn_and_excludes_one_valued_classes():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(40, 3))
    y[:, 2] = 0                                           # no positive: no AUROC
    s = rng.normal(size=(40, 3)) + y
    out = auroc(y, s, ["a", "b", "c"])
    for c, name in enumerate("ab"):
        assert out["per_class"][name] == pytest.approx(roc_auc_score(y[:, c], s[:, c]))
    assert math.isnan(out["per_class"]["c"]) and out["excluded"] == ["c"] and out["n_classes"] == 2
    assert out["mean"] == pytest.approx(np.mean([roc_auc_score(y[:, c], s[:, c]) for c in range(2)]))
    assert out["positives"] == {"a": int(y[:, 0].sum()), "b": int(y[:, 1].sum()), "c": 0}


def test_auroc_all_excluded_is_nan_and_shape_mismatch_raises():
    assert math.isnan(auroc(np.ones((4, 1)), np.zeros((4, 1)))["mean"])
    with pytest.raises(ValueError, match="same shape"):
        auroc(np.ones((4, 2)), np.zeros((4, 1)))


def test_accuracy_matches_sklearn():
    y, p = [0, 1, 2, 2, 1], [0, 2, 2, 2, 0]
    assert accuracy(y, p) == pytest.approx(accuracy_score(y, p))


def test_retrieval_single_relevant_matches_sklearn_top_k():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(30, 12))
    truth = rng.integers(0, 12, size=30)
    relevant = np.eye(12, dtype=bool)[truth]
    out = retrieval_metrics(scores, relevant, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert out[f"recall@{k}"] == pytest.approx(top_k_accuracy_score(truth, scores, k=k, labels=range(12)))
    # one relevant item: AP is 1 / its rank
    ranks = (scores > scores[np.arange(30), truth][:, None]).sum(1) + 1
    assert out["map"] == pytest.approx(np.mean(1.0 / ranks))


def test_map_with_several_relevant_matches_sklearn_average_precision():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(25, 15))
    relevant = rng.random((25, 15)) < 0.25
    relevant[np.arange(25), rng.integers(0, 15, 25)] = True
    relevant[3] = False                                       # a query with nothing to find is left out
    out = retrieval_metrics(scores, relevant)
    kept = [q for q in range(25) if relevant[q].any()]
    assert out["map"] == pytest.approx(np.mean([average_precision_score(relevant[q], scores[q]) for q in kept]))
    assert out["n_queries"] == 24 and out["queries_without_relevant"] == 1


def test_chance_recall_and_k_beyond_items():
    out = retrieval_metrics(np.zeros((1, 10)), np.eye(10, dtype=bool)[:1], ks=(1, 5, 20))
    assert out["chance_recall@5"] == pytest.approx(0.5)
    assert out["chance_recall@1"] == pytest.approx(0.1)
    assert out["recall@20"] == 1.0 and out["chance_recall@20"] == 1.0
    assert out["recall@1"] == 1.0                            # ties: lower index first, item 0 is relevant


def test_relevance_from_ids():
    rel = relevance_from_ids(["s1", "s2"], ["s1", "s1", "s3"])
    assert rel.tolist() == [[True, True, False], [False, False, False]]


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_dice_matches_hand_computation_and_skips_empty_classes():
    target = np.zeros((2, 6, 6, 4), dtype=np.int64)
    pred = np.zeros_like(target)
    target[0, :3, :3] = 1
    pred[0, :2, :3] = 1
    target[0, 4:, 4:] = 2
    pred[0, 3:, 4:] = 2
    target[1, :2, :2] = 1                                     # class 2 absent from sample 1's target
    pred[1, :1, :2] = 1
    out = dice_per_class(torch.as_tensor(pred), torch.as_tensor(target), 4, ["lung", "trachea", "none"])
    d1 = np.mean([_dice(pred[b] == 1, target[b] == 1) for b in range(2)])
    assert out["per_class"]["lung"] == pytest.approx(d1)
    assert out["per_class"]["trachea"] == pytest.approx(_dice(pred[0] == 2, target[0] == 2))
    assert math.isnan(out["per_class"]["none"])
    assert out["mean"] == pytest.approx((out["per_class"]["lung"] + out["per_class"]["trachea"]) / 2)


def test_json_safe_turns_nan_into_null():
    assert json_safe({"a": float("nan"), "b": [np.float32(1.5), float("inf")]}) == {"a": None, "b": [1.5, None]}
