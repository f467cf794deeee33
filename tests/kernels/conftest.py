"""Kernel tests run Triton in the CPU interpreter; triton.jit reads TRITON_INTERPRET when a kernel module is
imported, so it is set here, at conftest import, before any test module imports simcrop_kernels.
(simcrop_kernels imports its Triton module lazily, so an earlier import of the package is harmless.)"""
from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402


def make_inputs(Ns, V, N, D, dtype=torch.float32, seed=0):
    """Unit-norm sentences (Ns, D) and patches (V, N, D), rounded to `dtype` (returned in `dtype`)."""
    g = torch.Generator().manual_seed(seed)
    S = torch.nn.functional.normalize(torch.randn(Ns, D, generator=g, dtype=torch.float64), dim=-1)
    P = torch.nn.functional.normalize(torch.randn(V, N, D, generator=g, dtype=torch.float64), dim=-1)
    return S.to(dtype), P.to(dtype)


@pytest.fixture(name="make_inputs")
def make_inputs_fixture():
    return make_inputs
