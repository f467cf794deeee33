"""Model tests run single-threaded: on a shared 2-core box, torch's default intra-op threads spin
against other processes and make these tiny models 20x slower."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
