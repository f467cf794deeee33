"""Patient hold-outs and nested fractions (simcrop.data.splits)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from simcrop.data.splits import assign_splits, class_strata, hold_out_patients, nested_fractions, split_ids


def _manifest(n=20, val=True):
    rows = []
    for p in range(n):
        split = "test" if p >= n - 4 else ("val" if val and p >= n - 7 else "train")
        rows += [{"volume_id": f"p{p}_v{v}", "patient_id": f"p{p}", "split": split} for v in range(1 + p % 2)]
    return pd.DataFrame(rows)


def test_split_ids_keeps_the_manifest_splits_and_protocols():
    m = _manifest()
    held = split_ids(m)
    assert held["val"] == list(m.loc[m.split == "val", "volume_id"])
    official = split_ids(m, "val_is_test")
    assert official["val"] == official["test"] == held["test"]
    with pytest.raises(ValueError, match="protocol"):
        split_ids(m, "other")


def test_split_ids_without_val_holds_out_whole_patients_by_the_hash():
    m = _manifest(val=False)
    carved = split_ids(m, val_fraction=0.25, seed=3)
    patient = dict(zip(m.volume_id, m.patient_id))
    val_patients = {patient[v] for v in carved["val"]}
    assert val_patients == hold_out_patients(m.loc[m.split == "train", "patient_id"], 0.25, 3)
    assert val_patients.isdisjoint(patient[v] for v in carved["train"])
    assert carved["val"] and carved["test"] == list(m.loc[m.split == "test", "volume_id"])


def test_nested_fractions_are_nested_and_deterministic():
    ids = [f"v{i}" for i in range(30)]
    patients = [f"p{i // 2}" for i in range(30)]
    labels = np.zeros((30, 1))
    labels[29] = 1
    subsets = nested_fractions(ids, patients, (0.1, 0.5, 1.0), seed=0, labels=labels)
    assert set(subsets[0.1]) <= set(subsets[0.5]) <= set(subsets[1.0]) == set(ids)
    assert "v29" in subsets[0.1]                                     # class top-up
    assert subsets == nested_fractions(ids, patients, (0.1, 0.5, 1.0), seed=0, labels=labels)


def test_hold_out_patients():
    patients = [f"train_{i}" for i in range(200)]
    val = hold_out_patients(patients, 0.1, seed=3)
    assert len(val) == 20 and val == hold_out_patients(list(reversed(patients)), 0.1, seed=3)
    # hash ranking: new patients shift the cut-off a little but do not reshuffle the hold-out
    grown = hold_out_patients(patients + [f"new_{i}" for i in range(20)], 0.1, seed=3)
    assert len(grown) == 22 and len(grown & val) >= 15
    assert hold_out_patients(["a", "b"], 0.01, 0) and len(hold_out_patients(["a", "b"], 0.99, 0)) == 1
    assert hold_out_patients(["a"], 0.5, 0) == set() and hold_out_patients(patients, 0.0, 0) == set()


def test_assign_splits_holds_out_a_test_set_only_when_there_is_none():
    rows = [{"volume_id": f"v{i}", "patient_id": f"p{i // 2}", "split": "train"} for i in range(40)]
    split = {r["volume_id"]: r["split"] for r in assign_splits([dict(r) for r in rows], 0.1, 5, test_fraction=0.2)}
    by_patient = {}
    for r in rows:
        by_patient.setdefault(r["patient_id"], set()).add(split[r["volume_id"]])
    assert all(len(s) == 1 for s in by_patient.values())            # patients stay whole
    counts = {s: sum(1 for v in split.values() if v == s) for s in ("train", "val", "test")}
    assert counts == {"train": 28, "val": 4, "test": 8}             # 4 of 20 patients test, 2 of 16 val
    # an official test split is kept as it is: nothing more is held out as test
    official = [dict(r, split="test" if i >= 36 else "train") for i, r in enumerate(rows)]
    kept = assign_splits(official, 0.1, 5, test_fraction=0.2)
    assert sum(r["split"] == "test" for r in kept) == 4


def test_single_label_data_is_held_out_per_class():
    # 4 patients per class, as in the demo's CC-CCII sample: every class reaches train, val and test
    classes = ["normal", "covid", "cp"]
    rows = [{"volume_id": f"v{i}", "patient_id": f"p{i}", "split": "train",
             "labels": json.dumps({c: int(c == classes[i % 3]) for c in classes})} for i in range(12)]
    assert class_strata(rows) == {f"p{i}": classes[i % 3] for i in range(12)}
    out = assign_splits(rows, 0.1, 42, test_fraction=0.2)
    for split in ("train", "val", "test"):
        got = sorted(json.loads(r["labels"]) and max(json.loads(r["labels"]), key=json.loads(r["labels"]).get)
                     for r in out if r["split"] == split)
        assert set(got) == set(classes), (split, got)
    # multi-label rows (some with 0 or 2 positives) are not stratified
    multi = [dict(r, labels=json.dumps({"a": 1, "b": int(i % 2)})) for i, r in enumerate(rows)]
    assert class_strata(multi) is None
