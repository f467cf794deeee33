"""simcrop_kernels: fused sentence–patch similarity, streaming top-K and pooling (Triton + PyTorch reference).

    from simcrop_kernels import topk_similarity
    res = topk_similarity(S, P, k=32, mode="own", sentence_to_volume=s2v)   # S (Ns, D), P (V, N, D)
    res.indices, res.values, res.score, res.pooled                          # (Ns, K), (Ns, K), (Ns,), (Ns, D)

The Triton module is imported lazily (only for backend 'triton'), so importing this package has no side
effects and does not import triton.
"""
from .dispatch import TopKResult, topk_similarity

__all__ = ["TopKResult", "topk_similarity"]
