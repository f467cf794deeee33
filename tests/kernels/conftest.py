"""Kernel tests run Triton in the CPU interpreter by default, or compiled on CUDA with
SIMCROP_KERNEL_DEVICE=cuda (simcrop_kernels.testing; what benchmarks/gpu_check.sh does). triton.jit reads
TRITON_INTERPRET when a kernel module is imported, so it is set here, at conftest import, before any test
module imports the Triton module (simcrop_kernels imports it lazily, so an earlier import of the package is
harmless). tests/conftest.py defaults it to 1; on CUDA it is switched off here."""
from __future__ import annotations

import os

import pytest
import torch

from simcrop_kernels import testing

if testing.on_cuda():
    if not torch.cuda.is_available():
        raise pytest.UsageError(f"{testing.ENV}=cuda but no CUDA device is visible (torch.cuda.is_available() "
                                "is False); unset it to run the kernels in the CPU interpreter")
    os.environ["TRITON_INTERPRET"] = "0"
else:
    os.environ["TRITON_INTERPRET"] = "1"


def make_inputs(Ns, V, N, D, dtype=torch.float32, seed=0):
    """Unit-norm sentences (Ns, D) and patches (V, N, D), rounded to `dtype` (returned in `dtype`, on CPU)."""
    g = torch.Generator().manual_seed(seed)
    S = torch.nn.functional.normalize(torch.randn(Ns, D, generator=g, dtype=torch.float64), dim=-1)
    P = torch.nn.functional.normalize(torch.randn(V, N, D, generator=g, dtype=torch.float64), dim=-1)
    return S.to(dtype), P.to(dtype)


@pytest.fixture(name="make_inputs")
def make_inputs_fixture():
    return make_inputs


def pytest_generate_tests(metafunc):
    """`kernel_dtype`: every input dtype the kernels are tested in on this device, with readable ids."""
    if "kernel_dtype" in metafunc.fixturenames:
        metafunc.parametrize("kernel_dtype", testing.dtypes(), ids=testing.dtype_id)
