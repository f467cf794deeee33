"""The one public entry point: argument checks, backend choice, result packaging."""
from __future__ import annotations

import os
from typing import NamedTuple

from torch import Tensor

from .reference import _check, topk_similarity_chunked, topk_similarity_reference

BACKENDS = ("auto", "reference", "chunked", "triton")
# 'auto' on CPU switches to the chunked path when the plain path's similarities + keys would exceed this.
AUTO_CHUNK_BYTES = 1 << 30


class TopKResult(NamedTuple):
    """Outputs of `topk_similarity`; leading axes L = (Ns,) for mode 'own', (Ns, V) for mode 'all'.

    indices: (*L, K) int64 patch indices, by descending similarity (ties: lower index first).
    values:  (*L, K) float32 similarities of those patches.
    score:   (*L,) float32 mean of `values`; differentiable w.r.t. sentences and patches.
    pooled:  (*L, D) float32 mean of the chosen patch features, differentiable w.r.t. patches; None when
             return_pooled=False.
    """
    indices: Tensor
    values: Tensor
    score: Tensor
    pooled: Tensor | None


def interpreter_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(backend: str, sentences: Tensor, patches: Tensor, pairs: int) -> str:
    """'auto' → 'triton' for CUDA tensors, else 'reference' ('chunked' when the plain path is too big)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "triton":
        if not (sentences.is_cuda or interpreter_requested()):
            raise ValueError("backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 set before the first "
                             "call for the CPU interpreter")
        return backend
    if backend != "auto":
        return backend
    if sentences.is_cuda:
        return "triton"
    return "chunked" if pairs * patches.shape[1] * 12 > AUTO_CHUNK_BYTES else "reference"


def topk_similarity(sentences: Tensor, patches: Tensor, k: int, *, mode: str = "own",
                    sentence_to_volume: Tensor | None = None, patch_mask: Tensor | None = None,
                    return_pooled: bool = True, backend: str = "auto") -> TopKResult:
    """Top-K patch similarities per (sentence, volume), their mean (score) and the mean chosen patch.

    sentences: (Ns, D) and patches: (V, N, D), float16/bfloat16/float32, both L2-normalised by the caller;
        similarities are accumulated and selected in float32.
    k: patches kept per pair, 1 <= k <= N (and k <= 64 on the Triton path).
    mode: 'own' — sentence s against volume sentence_to_volume[s] ((Ns,) int64; may be omitted when
        Ns == V, meaning sentence i ↔ volume i); 'all' — every sentence against every volume.
    patch_mask: (V, N) bool, True where a patch may be chosen; each volume needs at least k True entries.
    backend: 'auto' (Triton on CUDA tensors, the PyTorch reference elsewhere, the chunked reference when
        the whole similarity tensor would exceed ~1 GB), 'reference', 'chunked' (bounded memory), 'triton'
        (CUDA, or the CPU interpreter when TRITON_INTERPRET=1 was set before the first Triton call).
    The selection is constant: no gradient flows through the choice of indices.
    """
    s2v = _check(sentences, patches, k, mode, sentence_to_volume)
    V, _, D = patches.shape
    pairs = sentences.shape[0] * (V if mode == "all" else min(V, D))  # what the plain path scores at once
    chosen = resolve_backend(backend, sentences, patches, pairs)
    args = dict(mode=mode, sentence_to_volume=s2v, patch_mask=patch_mask, return_pooled=return_pooled)
    if chosen == "triton":
        from .topk_triton import topk_similarity_triton  # lazy: triton.jit reads TRITON_INTERPRET on import
        return TopKResult(*topk_similarity_triton(sentences, patches, k, **args))
    if chosen == "chunked":
        return TopKResult(*topk_similarity_chunked(sentences, patches, k, **args))
    return TopKResult(*topk_similarity_reference(sentences, patches, k, **args))
