"""Determinism: same seed → identical CSVs and voxels whatever the worker count; another seed differs."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from simcrop.config import SynthesizeConfig
from simcrop.data.synthetic import ORGAN_LABELS, generate_corpus
from simcrop.data.synthetic.corpus import make_scan
from simcrop.data.synthetic.layout import plan_corpus

from .conftest import TINY


def _texts(root):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.suffix in (".csv", ".txt", ".jsonl", ".json")}


def test_summary(corpus):
    root, summary = corpus
    counts = summary["counts"]
    assert counts["patients"] == {"train": 4, "valid": 1}
    assert counts["volumes"] == counts["train"]["volumes"] + counts["valid"]["volumes"]
    assert summary["seconds_per_volume"] > 0
    meta = json.loads((root / "synthetic/corpus.json").read_text())
    assert meta["seed"] == 0 and meta["preset"] == "small" and meta["organ_labels"] == ORGAN_LABELS


def test_workers_do_not_change_output(corpus, corpus_two_workers):
    (a, _), (b, _) = corpus, corpus_two_workers
    assert _texts(a) == _texts(b)
    for path in sorted(a.rglob("*.nii.gz")):
        other = b / path.relative_to(a)
        assert np.array_equal(np.asanyarray(nib.load(path).dataobj), np.asanyarray(nib.load(other).dataobj))
        assert np.allclose(nib.load(path).affine, nib.load(other).affine)


def test_another_seed_differs(corpus, tmp_path):
    root, _ = corpus
    scan = plan_corpus(TINY["n_patients"], TINY["valid_fraction"], TINY["max_scans"], TINY["max_reconstructions"], 1)[0]
    make_scan(str(tmp_path), "small", 1, scan)
    name = scan.names[0]
    path = next(root.rglob(f"{name}.nii.gz"))
    other = next(tmp_path.rglob(f"{name}.nii.gz"))
    a, b = np.asanyarray(nib.load(path).dataobj), np.asanyarray(nib.load(other).dataobj)
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_rejects_unknown_preset(tmp_path):
    import pytest
    with pytest.raises(ValueError, match="preset"):
        generate_corpus(tmp_path, SynthesizeConfig(preset="huge"), progress=False)
