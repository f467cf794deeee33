"""Tiny corpora shared by the synthetic-corpus tests (generated once per session, ~10 volumes each)."""
from __future__ import annotations

import pytest

from simcrop.config import SynthesizeConfig
from simcrop.data.synthetic import generate_corpus

TINY = dict(n_patients=5, valid_fraction=0.2, max_scans=2, max_reconstructions=2, preset="small")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """(root, summary) of the seed-0 corpus built with one worker."""
    root = tmp_path_factory.mktemp("synthetic_w1")
    return root, generate_corpus(root, SynthesizeConfig(seed=0, workers=1, **TINY), progress=False)


@pytest.fixture(scope="session")
def corpus_two_workers(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic_w2")
    return root, generate_corpus(root, SynthesizeConfig(seed=0, workers=2, **TINY), progress=False)
