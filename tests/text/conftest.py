"""Text fixtures; `text_encoder` (the real all-MiniLM-L6-v2, once per session) is in tests/conftest.py."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tokenizer(text_encoder):
    return text_encoder.tokenizer


@pytest.fixture(scope="session")
def splitter():
    from simcrop.text.sentences import build_splitter

    return build_splitter()
