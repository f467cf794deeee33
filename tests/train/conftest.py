"""Training tests: one thread (shared 2-core box) and a scratch working directory so dvclive finds no
Git/DVC repository to look into. `train_helpers` lives in tests/support (pytest `pythonpath`; spawned
DDP ranks inherit sys.path)."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module", autouse=True)
def _scratch_cwd(tmp_path_factory):
    before = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(before)
