"""Where the kernel tests run: the Triton CPU interpreter (default) or a CUDA device, chosen by the environment.

    python -m pytest tests/kernels                                               # CPU interpreter, fp32 + fp16
    SIMCROP_KERNEL_DEVICE=cuda TRITON_INTERPRET=0 python -m pytest tests/kernels  # compiled, fp32 + fp16 + bf16

The choice is read from the environment (not a pytest option) because `triton.jit` decides between the
interpreter and the compiler when a kernel module is imported, before any option would be parsed;
tests/kernels/conftest.py sets TRITON_INTERPRET from it. bf16 `tl.dot` is wrong in the interpreter, so
bfloat16 is a test dtype on CUDA only. Imports nothing from triton.
"""
from __future__ import annotations

import os

import torch

ENV = "SIMCROP_KERNEL_DEVICE"
DEVICES = ("cpu", "cuda")
NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def device() -> str:
    """'cpu' (Triton interpreter; the default) or 'cuda' (compiled kernels), from $SIMCROP_KERNEL_DEVICE."""
    value = os.environ.get(ENV, "").strip().lower() or "cpu"
    if value not in DEVICES:
        raise ValueError(f"{ENV}={value!r}: expected one of {DEVICES}")
    return value


def on_cuda() -> bool:
    return device() == "cuda"


def dtypes() -> list[torch.dtype]:
    """Input dtypes the kernel tests cover on this device (bf16 on CUDA only)."""
    return [torch.float16, torch.float32] + ([torch.bfloat16] if on_cuda() else [])


def dtype_id(dtype: torch.dtype) -> str:
    """Short test id of a dtype (fp32, fp16, bf16): test names then say which precision failed."""
    return NAMES.get(dtype, str(dtype).removeprefix("torch."))
