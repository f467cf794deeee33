"""Patient-level (cluster) bootstrap intervals for per-item scores.

Items (sentences, volumes) of one patient are not independent: a patient's reconstructions share a scan
and a report. The bootstrap therefore resamples *patients* with replacement and keeps all items of each
drawn patient. With S_p the sum of an item value over patient p's items, n_p their count and W (B, P) the
number of times each patient is drawn in each of B resamples,

    mean_b        = (W S)_b / (W n)_b                       (mean of per-item values)
    ratio_b       = (W S_num)_b / (W S_den)_b               (ratio of means, e.g. hit ÷ chance)
    difference_b  = (W (S_a - S_b))_b / (W n)_b             (paired: two methods scored on the same items)

and the 95 % interval is the 2.5th-97.5th percentile of the B resampled statistics (percentile method).
W depends only on the patients and the seed, so every statistic of one `ClusterBootstrap` (and of two
built from the same patients and seed) uses the same resamples: differences are paired.

    boot = ClusterBootstrap(patient_ids, n_boot=1000, seed=0)
    boot.mean(hit)                   # {"value": 0.31, "lo": 0.25, "hi": 0.37}
    boot.ratio(hit, chance)          # ratio of means
    boot.diff(hit_model, hit_prior)  # paired difference of means
    boot.stat(fn)                    # any statistic fn(item indices) -> float, e.g. a mean AUROC

`stat` is for statistics that are not means of per-item values (AUROC, accuracy over volumes): fn gets
the item indices of one resample (all items of each drawn patient, repeated as often as it is drawn;
`np.arange(n_items)` for the point estimate) and returns a float (NaN where undefined, e.g. a resample
without positives; such resamples are left out of the percentiles). A paired difference of two such
statistics is `stat(lambda i: fa(i) - fb(i))`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

N_BOOT = 1000
LEVEL = 0.95


class ClusterBootstrap:
    """Resamples of the patients in `groups` (one label per item), drawn once and shared by every statistic."""

    def __init__(self, groups: Sequence, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL):
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1); got {level}")
        groups = np.asarray(groups)
        self.n_items, self.n_boot, self.level = int(groups.size), int(n_boot), float(level)
        if self.n_items:
            labels, self.codes = np.unique(groups, return_inverse=True)
        else:
            labels, self.codes = np.zeros(0), np.zeros(0, dtype=np.int64)
        self.n_groups = int(labels.size)
        rng = np.random.default_rng(seed)
        p = self.n_groups
        if p:
            draws = rng.integers(0, p, size=(self.n_boot, p))                       # (B, P) patient draws
            offset = draws + (np.arange(self.n_boot) * p)[:, None]
            self.weights = np.bincount(offset.ravel(), minlength=self.n_boot * p).reshape(self.n_boot, p)
        else:
            self.weights = np.zeros((self.n_boot, 0), dtype=np.int64)
        self.counts = self._sums(np.ones(self.n_items))                               # (P,) items per patient

    def _sums(self, values) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size != self.n_items:
            raise ValueError(f"{values.size} values for {self.n_items} items")
        return np.bincount(self.codes, weights=values, minlength=self.n_groups)

    def _interval(self, point: float, stats: np.ndarray) -> dict:
        stats = stats[np.isfinite(stats)]
        if not self.n_items or not np.isfinite(point) or stats.size == 0:
            return {"value": float(point), "lo": float("nan"), "hi": float("nan")}
        tail = 100 * (1 - self.level) / 2
        lo, hi = np.percentile(stats, [tail, 100 - tail])
        return {"value": float(point), "lo": float(lo), "hi": float(hi)}

    @staticmethod
    def _divide(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(b != 0, a / np.where(b != 0, b, 1), np.nan)

    def mean(self, values) -> dict:
        """Mean of per-item values with its interval."""
        s = self._sums(values)
        point = float(s.sum() / self.n_items) if self.n_items else float("nan")
        return self._interval(point, self._divide(self.weights @ s, self.weights @ self.counts))

    def ratio(self, num, den) -> dict:
        """mean(num) / mean(den) over the same items (e.g. hit fraction ÷ its chance) with its interval."""
        a, b = self._sums(num), self._sums(den)
        point = float(a.sum() / b.sum()) if self.n_items and b.sum() != 0 else float("nan")
        return self._interval(point, self._divide(self.weights @ a, self.weights @ b))

    def diff(self, a, b) -> dict:
        """Paired mean(a) - mean(b), two methods scored on the same items, with its interval."""
        return self.mean(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))

    def indices(self, b: int) -> np.ndarray:
        """Item indices of resample b: every item of each drawn patient, once per draw (sorted)."""
        return np.repeat(np.arange(self.n_items), self.weights[b][self.codes])

    def stat(self, fn) -> dict:
        """fn(item indices) -> float on all items and on every resample, with its interval."""
        if not self.n_items:
            return {"value": float("nan"), "lo": float("nan"), "hi": float("nan")}
        point = fn(np.arange(self.n_items))
        point = float("nan") if point is None else float(point)
        stats = [fn(self.indices(b)) for b in range(self.n_boot)]
        return self._interval(point, np.array([np.nan if v is None else v for v in stats], dtype=np.float64))

    def ratio_diff(self, num_a, num_b, den) -> dict:
        """mean(num_a)/mean(den) - mean(num_b)/mean(den): a difference of ratios to one chance."""
        d = np.asarray(num_a, dtype=np.float64) - np.asarray(num_b, dtype=np.float64)
        return self.ratio(d, den)


def bootstrap_mean(values, groups, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> dict:
    """Shortcut: `ClusterBootstrap(groups, n_boot, seed, level).mean(values)`."""
    return ClusterBootstrap(groups, n_boot, seed, level).mean(values)


def format_interval(stat: dict | None, digits: int = 3) -> str:
    """{"value", "lo", "hi"} → "0.310 [0.250, 0.370]" ("—" when missing; no bracket without an interval)."""
    if not stat or stat.get("value") is None or not np.isfinite(stat["value"]):
        return "—"
    text = f"{stat['value']:.{digits}f}"
    lo, hi = stat.get("lo"), stat.get("hi")
    if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text
