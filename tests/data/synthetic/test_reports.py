"""Report statistics against the real CT-RATE targets (docs/data.md) and the sentence ↔ lesion link."""
from __future__ import annotations

import re

import numpy as np

from simcrop.data.labels import MISSING_SECTION
from simcrop.data.synthetic.findings import PLANTERS
from simcrop.data.synthetic.reports import NEGATION, expand, write_report


def _records(rng):
    labels = rng.choice(list(PLANTERS), size=int(rng.integers(0, 4)), replace=False)
    return [{"id": i + 1, "label": str(lab), "location": str(rng.choice(["right upper lobe", "left lower lobe"])),
             "size_mm": float(rng.uniform(4, 30)), "attrs": {"amount": "small", "kind": "solid"}, "center": [0, 0, 0]}
            for i, lab in enumerate(labels)]


def test_sentence_counts_negations_and_vocabulary():
    counts, negated, words, vocab = [], [], [], set()
    for i in range(200):
        rng = np.random.default_rng(i)
        text = write_report(_records(rng), rng, 1.5)["Findings_EN"]
        sentences = [s for s in text.split(". ") if s]                  # crude, as the brief allows
        counts.append(len(sentences))
        negated += [bool(NEGATION.search(s)) for s in sentences]
        words += [len(s.split()) for s in sentences]
        vocab |= set(re.findall(r"[a-z]+", text.lower()))
    assert 12 <= min(counts) and max(counts) <= 36                    # "approx. " can add a split
    assert 16 <= np.median(counts) <= 22
    assert 0.22 <= np.mean(negated) <= 0.42
    assert 8 <= np.mean(words) <= 14
    assert len(vocab) >= 300


def test_spans_point_at_each_lesion_sentence():
    rng = np.random.default_rng(1)
    records = _records(np.random.default_rng(5)) or _records(np.random.default_rng(6))
    report = write_report(records, rng, 5.0, clinical_given=False)
    assert report["ClinicalInformation_EN"] == MISSING_SECTION
    for rec in records:
        start, end = rec["sentence_span"]
        assert report["Findings_EN"][start:end] == rec["sentence"]
        assert not NEGATION.search(rec["sentence"]) or "without" in rec["sentence"] or "not" in rec["sentence"]
    assert report["Impressions_EN"] and report["Impressions_EN"] != MISSING_SECTION


def test_expand_nests_and_fills_slots():
    rng = np.random.default_rng(0)
    out = expand("{a {b|c}|a {b|c}} nodule in the {loc}.", rng, loc="right upper lobe")
    assert out in {"A b nodule in the right upper lobe.", "A c nodule in the right upper lobe."}
