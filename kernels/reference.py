"""Pure-PyTorch top-K similarity pooling: the plain path and a chunked, bounded-memory path.

Both compute, for every (sentence s, volume v) pair of the call shape,

    sims[n]   = S[s] · P[v, n]                         (fp32, n < N)
    indices   = top-K of sims, ties to the lower n     (packed int64 keys, see `pack_keys`)
    values    = sims[indices]                          (fp32, descending)
    pooled    = mean_k P[v, indices[k]]                (fp32)
    score     = mean_k values = S[s] · pooled          (fp32)

Call shapes: ``own`` (sentence s against volume ``sentence_to_volume[s]``; outputs [Ns, ...]) and
``all`` (every sentence against every volume; outputs [Ns, V, ...]).  The selection carries no gradient;
gradients reach S through ``score`` and P through ``pooled`` and ``score``.

Memory accounting (fp32 sims, Ns sentences, V volumes, N patches, D dims, K picks, 'all' mode):
- plain path: sims and int64 keys Ns·V·N·(4 + 8) bytes, gathered patches Ns·V·K·D·4 bytes (kept for
  backward), outputs Ns·V·(D + 2K + 1)·4 bytes.  At 512 × 32 × 2744 × 768, K = 64: 0.54 GB + 3.2 GB.
- chunked path: the same per block of (sentences, volumes), bounded by ``chunk_bytes``; backward
  scatters into dP block by block (``index_add_``), so nothing of size Ns·V·N or Ns·V·K·D stays alive.
"""
from __future__ import annotations

import torch
from torch import Tensor

_LOW32 = 0xFFFFFFFF


def pack_keys(sims: Tensor) -> Tensor:
    """Order-preserving int64 keys: fp32 bits (monotone as signed int32) high, inverted index low.

    sims: (..., N) float32.  Returns (..., N) int64; a larger key means a larger similarity or, for equal
    similarities, a lower index, so `topk` on keys breaks ties to the lower index deterministically.
    """
    if sims.dtype != torch.float32:
        raise ValueError(f"pack_keys needs float32 similarities, got {sims.dtype}")
    bits = sims.contiguous().view(torch.int32)
    hi = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF).to(torch.int64)
    n = torch.arange(sims.shape[-1], device=sims.device, dtype=torch.int64)
    return (hi << 32) | (_LOW32 - n)


def select_topk(sims: Tensor, k: int, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Top-K along the last axis with ties to the lower index.

    sims: (..., N) float32 (packed keys + topk) or float64 (stable sort, for tests); valid: optional bool,
    broadcastable to sims (False = never chosen unless fewer than K patches are valid).
    Returns indices (..., K) int64 and values (..., K) in the dtype of sims, descending.
    """
    if sims.dtype != torch.float32:
        s = sims if valid is None else sims.masked_fill(~valid, float("-inf"))
        idx = s.sort(dim=-1, descending=True, stable=True).indices[..., :k]
        return idx, sims.gather(-1, idx)
    keys = pack_keys(sims)
    if valid is not None:
        keys = keys.masked_fill(~valid, torch.iinfo(torch.int64).min)
    idx = torch.topk(keys, k, dim=-1, sorted=True).indices
    return idx, sims.gather(-1, idx)


def _needs_grad(sentences: Tensor, patches: Tensor) -> bool:
    return torch.is_grad_enabled() and (sentences.requires_grad or patches.requires_grad)


def _check(sentences: Tensor, patches: Tensor, k: int, mode: str, s2v: Tensor | None) -> Tensor | None:
    if sentences.dim() != 2 or patches.dim() != 3 or sentences.shape[1] != patches.shape[2]:
        raise ValueError(f"expected sentences (Ns, D) and patches (V, N, D), got {tuple(sentences.shape)} "
                         f"and {tuple(patches.shape)}")
    if not 1 <= k <= patches.shape[1]:
        raise ValueError(f"k must satisfy 1 <= k <= N={patches.shape[1]}, got {k}")
    if mode not in ("own", "all"):
        raise ValueError(f"mode must be 'own' or 'all', got {mode!r}")
    if mode == "all":
        return None
    if s2v is None:
        if sentences.shape[0] != patches.shape[0]:
            raise ValueError("mode='own' needs sentence_to_volume unless there is one sentence per volume")
        return torch.arange(sentences.shape[0], device=sentences.device)
    if s2v.shape != (sentences.shape[0],):
        raise ValueError(f"sentence_to_volume must have shape ({sentences.shape[0]},), got {tuple(s2v.shape)}")
    return s2v.to(device=sentences.device, dtype=torch.long)


def topk_similarity_reference(sentences: Tensor, patches: Tensor, k: int, *, mode: str = "own",
                              sentence_to_volume: Tensor | None = None, patch_mask: Tensor | None = None,
                              return_pooled: bool = True):
    """Plain path: whole fp32 similarity tensor, `torch.topk`, gather, mean; autograd does the backward.

    sentences (Ns, D), patches (V, N, D), float dtypes; patch_mask (V, N) bool, True = may be chosen.
    Returns (indices, values, score, pooled-or-None); see the module docstring for shapes.
    """
    s2v = _check(sentences, patches, k, mode, sentence_to_volume)
    acc = torch.promote_types(patches.dtype, torch.float32)  # float32, or float64 for float64 inputs
    S, P = sentences.detach().to(acc), patches.detach().to(acc)
    if s2v is None:
        sims = torch.einsum("sd,vnd->svn", S, P)  # (Ns, V, N)
        valid = None if patch_mask is None else patch_mask[None]
    else:
        if P.shape[0] <= P.shape[2]:  # few volumes: one GEMM against all of them, keep each sentence's row
            sims = torch.einsum("sd,vnd->svn", S, P)[torch.arange(S.shape[0], device=S.device), s2v]
        else:  # many volumes: gather each sentence's volume (Ns·N·D instead of Ns·V·N)
            sims = torch.einsum("sd,snd->sn", S, P[s2v])
        valid = None if patch_mask is None else patch_mask[s2v]  # sims (Ns, N)
    with torch.no_grad():
        idx, values = select_topk(sims, k, valid)
    if not return_pooled and not _needs_grad(sentences, patches):  # retrieval: the score is all we need
        return idx, values, values.mean(-1), None
    pooled, score = pool_from_indices(sentences, patches, idx, s2v)
    return idx, values, score, (pooled if return_pooled else None)


def pool_from_indices(sentences: Tensor, patches: Tensor, indices: Tensor, s2v: Tensor | None):
    """Differentiable pooled features and scores for a fixed selection (autograd through a gather).

    indices: (Ns, K) with s2v (Ns,) for 'own', or (Ns, V, K) with s2v None for 'all'.
    Returns pooled (Ns[, V], D) and score (Ns[, V]) in float32 (float64 if the inputs are float64).
    """
    acc = torch.promote_types(patches.dtype, torch.float32)
    if s2v is not None:
        picked = patches[s2v[:, None], indices]  # (Ns, K, D)
        pooled = picked.to(acc).mean(-2)
        score = (sentences.to(acc) * pooled).sum(-1)
    else:
        v = torch.arange(patches.shape[0], device=patches.device)
        picked = patches[v[None, :, None], indices]  # (Ns, V, K, D)
        pooled = picked.to(acc).mean(-2)
        score = torch.einsum("sd,svd->sv", sentences.to(acc), pooled)
    return pooled, score


class _ChunkedPool(torch.autograd.Function):
    """pooled/score for a fixed selection, computed and differentiated in bounded blocks.

    Gradient (selection constant, H[s, v] = (dpooled[s, v] + dscore[s, v] · S[s]) / K):
        dS[s]    = Σ_v dscore[s, v] · pooled[s, v]
        dP[v, n] = Σ_s Σ_k 1[indices[s, v, k] = n] · H[s, v]     (index_add_, deterministic on CPU)
    """

    @staticmethod
    def forward(ctx, sentences, patches, indices, s2v, block):
        V, N, D = patches.shape
        acc = torch.promote_types(patches.dtype, torch.float32)
        Ns = sentences.shape[0]
        pooled = torch.empty(indices.shape[:-1] + (D,), device=patches.device, dtype=acc)
        for s0 in range(0, Ns, block):
            sl = slice(s0, s0 + block)
            if s2v is None:
                vv = torch.arange(V, device=patches.device)[None, :, None]
                pooled[sl] = patches[vv, indices[sl]].to(acc).mean(-2)
            else:
                pooled[sl] = patches[s2v[sl, None], indices[sl]].to(acc).mean(-2)
        S = sentences.to(acc)
        score = (S * pooled).sum(-1) if s2v is not None else torch.einsum("sd,svd->sv", S, pooled)
        ctx.save_for_backward(sentences, indices, pooled, s2v if s2v is not None else torch.empty(0))
        ctx.own, ctx.block, ctx.p_shape, ctx.p_dtype = s2v is not None, block, patches.shape, patches.dtype
        return pooled, score

    @staticmethod
    def backward(ctx, g_pooled, g_score):
        sentences, indices, pooled, s2v = ctx.saved_tensors
        V, N, D = ctx.p_shape
        K = indices.shape[-1]
        acc = pooled.dtype
        g_pooled = torch.zeros_like(pooled) if g_pooled is None else g_pooled
        g_score = torch.zeros(pooled.shape[:-1], device=pooled.device, dtype=acc) if g_score is None else g_score
        S = sentences.to(acc)
        dS = (g_score[..., None] * pooled).sum(-2) if not ctx.own else g_score[:, None] * pooled
        dP = torch.zeros(V * N, D, device=pooled.device, dtype=acc)
        for s0 in range(0, S.shape[0], ctx.block):
            sl = slice(s0, s0 + ctx.block)
            if ctx.own:
                H = (g_pooled[sl] + g_score[sl, None] * S[sl]) / K  # (b, D)
                flat = s2v[sl, None] * N + indices[sl]  # (b, K)
            else:
                H = (g_pooled[sl] + g_score[sl, :, None] * S[sl, None]) / K  # (b, V, D)
                flat = torch.arange(V, device=pooled.device)[None, :, None] * N + indices[sl]
            H = H.unsqueeze(-2).expand(flat.shape + (D,))
            dP.index_add_(0, flat.reshape(-1), H.reshape(-1, D))
        return dS.to(sentences.dtype), dP.view(V, N, D).to(ctx.p_dtype), None, None, None


def topk_similarity_chunked(sentences: Tensor, patches: Tensor, k: int, *, mode: str = "own",
                            sentence_to_volume: Tensor | None = None, patch_mask: Tensor | None = None,
                            return_pooled: bool = True, chunk_bytes: int = 64 << 20):
    """Same results as `topk_similarity_reference`, never holding more than ~chunk_bytes of temporaries.

    Blocks of sentences (and, in 'all' mode, of volumes) are scored, selected and pooled in turn; the
    backward scatters into dP block by block.  Peak temporary memory ≈ chunk_bytes plus the outputs.
    """
    s2v = _check(sentences, patches, k, mode, sentence_to_volume)
    Ns, D = sentences.shape
    V, N, _ = patches.shape
    S, P = sentences.detach(), patches.detach()
    per_pair = 4 * N + 8 * N + 8 * N  # sims + keys + topk/where temporaries, bytes per (sentence, volume)
    if s2v is None:
        vb = max(1, min(V, chunk_bytes // 2 // (4 * N * D + per_pair)))  # half: the fp32 copy of the volumes
        sb = max(1, min(Ns, chunk_bytes // 2 // (per_pair * vb)))
        idx = torch.empty(Ns, V, k, device=S.device, dtype=torch.long)
        values = torch.empty(Ns, V, k, device=S.device, dtype=torch.float32)
        with torch.no_grad():
            for v0 in range(0, V, vb):
                Pv = P[v0:v0 + vb].float()
                valid = None if patch_mask is None else patch_mask[None, v0:v0 + vb]
                for s0 in range(0, Ns, sb):
                    sims = torch.einsum("sd,vnd->svn", S[s0:s0 + sb].float(), Pv)
                    i, val = select_topk(sims, k, valid)
                    idx[s0:s0 + sb, v0:v0 + vb], values[s0:s0 + sb, v0:v0 + vb] = i, val
        block = max(1, chunk_bytes // (V * 4 * k * D))
    else:
        sb = max(1, min(Ns, chunk_bytes // (per_pair + 4 * N * D)))  # own also gathers its volumes
        idx = torch.empty(Ns, k, device=S.device, dtype=torch.long)
        values = torch.empty(Ns, k, device=S.device, dtype=torch.float32)
        with torch.no_grad():
            for s0 in range(0, Ns, sb):
                vol = s2v[s0:s0 + sb]
                sims = torch.einsum("sd,snd->sn", S[s0:s0 + sb].float(), P[vol].float())
                valid = None if patch_mask is None else patch_mask[vol]
                idx[s0:s0 + sb], values[s0:s0 + sb] = select_topk(sims, k, valid)
        block = max(1, chunk_bytes // (4 * k * D))
    if not return_pooled and not _needs_grad(sentences, patches):
        return idx, values, values.mean(-1), None
    pooled, score = _ChunkedPool.apply(sentences, patches, idx, s2v, block)
    return idx, values, score, (pooled if return_pooled else None)
