"""Patient-level splits: the one home of every hold-out (never per volume, so no patient is on both sides).

One hold-out algorithm, `hold_out_patients`: patients ranked by a seeded hash, so a patient's side
depends only on its id and the seed (adding volumes or patients does not reshuffle the others). Ingest
uses it for the manifest's val / test (`assign_splits`, per class for single-label data); `split_ids`
(probe, segmentation) uses it too when a QC-filtered manifest has no `val` rows.

`nested_fractions` (the probe's and segmentation's 1 % / 10 % / 100 % training subsets) orders patients
by a seeded shuffle instead: ordering them by the hash would draw other subsets and so change the
published numbers; a hold-out and a nested ordering are different questions anyway.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Sequence

import numpy as np
import pandas as pd

PROTOCOLS = ("holdout", "val_is_test")


# --- ingest: hash-ranked hold-out ------------------------------------------------------------------------
def _rank(patient_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{patient_id}".encode()).hexdigest()


def hold_out_patients(patient_ids, fraction: float, seed: int) -> set[str]:
    """round(fraction * n) patients (at least 1 if fraction > 0, never all), chosen by a seeded hash.

    Ranking by hash rather than shuffling keeps a patient's assignment independent of which other patients
    are present, so adding volumes does not reshuffle the hold-out.
    """
    patients = sorted(set(patient_ids))
    if fraction <= 0 or len(patients) < 2:
        return set()
    n_val = min(max(1, round(fraction * len(patients))), len(patients) - 1)
    return set(sorted(patients, key=lambda p: _rank(p, seed))[:n_val])


def class_strata(rows: list[dict]) -> dict[str, str] | None:
    """patient -> class when every row's labels are one-hot (a single-label dataset such as CC-CCII), so
    held-out splits can be drawn per class; None otherwise (multi-label or unlabelled data)."""
    strata = {}
    for row in rows:
        raw = row.get("labels") or ""
        labels = json.loads(raw) if isinstance(raw, str) and raw else raw
        if not isinstance(labels, dict) or sum(float(v) for v in labels.values()) != 1:
            return None
        strata[row["patient_id"]] = max(labels, key=lambda k: float(labels[k]))
    return strata


def stratified_hold_out(patients: set[str], fraction: float, seed: int, strata: dict[str, str] | None) -> set[str]:
    """`hold_out_patients` within each class of `strata` (None: over all patients)."""
    if strata is None:
        return hold_out_patients(patients, fraction, seed)
    groups: dict[str, set[str]] = {}
    for p in patients:
        groups.setdefault(strata[p], set()).add(p)
    return set().union(*(hold_out_patients(g, fraction, seed) for g in groups.values()))


def assign_splits(rows: list[dict], val_fraction: float, seed: int, test_fraction: float = 0.0) -> list[dict]:
    """Provisional `train` patients → `train` or `val` (per patient); `test` stays `test`. A dataset
    without any `test` row (CC-CCII has no official split) first gets test_fraction of its patients as test.
    Single-label data is held out per class (`class_strata`), so no class is missing from a split by chance."""
    train_patients = {r["patient_id"] for r in rows if r["split"] == "train"}
    test_patients = {r["patient_id"] for r in rows if r["split"] == "test"}
    both = sorted(train_patients & test_patients)
    if both:
        raise ValueError(f"patients in both the training and the test data: {both[:5]}")
    strata = class_strata(rows)
    test = set() if test_patients else stratified_hold_out(train_patients, test_fraction, seed + 1, strata)
    val = stratified_hold_out(train_patients - test, val_fraction, seed, strata)
    for row in rows:
        if row["patient_id"] in test:
            row["split"] = "test"
        elif row["patient_id"] in val:
            row["split"] = "val"
    return rows


# --- evaluation: the manifest's splits, and nested data fractions --------------------------------------------
def split_ids(manifest: pd.DataFrame, protocol: str = "holdout", val_fraction: float = 0.1,
              seed: int = 42) -> dict[str, list[str]]:
    """{"train", "val", "test": volume ids} by patient, from a (usable-volume) manifest.

    holdout: train on `train`, pick on `val`, report on `test`; a manifest without `val` rows gets
    `hold_out_patients(train patients, val_fraction, seed)` as val (round(f * n), at least one, never all). val_is_test (the official
    protocol): train on train + val, pick and report on `test`.
    """
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
        held = hold_out_patients(train["patient_id"], val_fraction, seed)
        val, train = train[train["patient_id"].isin(held)], train[~train["patient_id"].isin(held)]
    return {"train": list(train["volume_id"]), "val": list(val["volume_id"]), "test": list(by["test"]["volume_id"])}


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
    # first-seen order (not sorted) before the shuffle: what the published subsets were drawn from
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
