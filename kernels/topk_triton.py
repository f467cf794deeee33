"""Triton kernels for fused similarity + streaming top-K + pooling, their autograd, and torch.library ops.

Kernels (R = rows of the call shape: Ns for 'own', Ns·V for 'all'; row(s, v) = s·row_s + v·row_v):
- `_select_kernel` (K1), grid (sentence blocks, V), sentence block fastest so a volume's patches stay in L2:
  for each patch tile, sims = S_blk @ P[v, tile]ᵀ in fp32 → int64 keys (order-preserving fp32 bits high,
  inverted patch index low: ties go to the lower index) → `tl.topk` of the tile, merged into the running
  list with `tl.bitonic_merge` + elementwise max.  Epilogue: indices, exact fp32 values, score = mean of
  values, and a selection bitmask (R, ceil(N/32)) int32 set with atomic OR (order-free, so deterministic).
- `_pool_kernel` (K2), grid (sentence blocks, V, D blocks): pooled = (sel @ P[v]) / K as a dense `tl.dot`
  with the bitmask expanded to a 0/1 tile (exact in any input dtype).
- `_grad_patches_kernel` (K3), grid (patch blocks, V, D blocks): destination-owned dP, no atomics.

Gradient math (selection constant; sel[s, v, n] = 1[n ∈ top-K(s, v)]):
    pooled[s, v] = (1/K) Σ_n sel[s, v, n] P[v, n]        score[s, v] = S[s] · pooled[s, v]
    dS[s]        = Σ_v dscore[s, v] · pooled[s, v]
    dP[v, n]     = Σ_s sel[s, v, n] · H[s, v],   H[s, v] = (dpooled[s, v] + dscore[s, v] · S[s]) / K
so dP[v] = sel[:, v]ᵀ @ H[:, v]: each K3 program owns a (patch tile, D tile) of dP and loops over sentence
blocks.  In 'own' mode sel[s, v] is zero unless sentence_to_volume[s] == v.

Import this module only after deciding on TRITON_INTERPRET: `triton.jit` reads it at decoration time.
(Named topk_triton, not topk_similarity: importing a submodule sets it as an attribute of the package,
which would shadow the public function `simcrop_kernels.topk_similarity`.)
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

MAX_K = 64
_PAD_KEY = tl.constexpr(-9223372036854775807)  # below every real key


def _pow2(x: int) -> int:
    return 1 << max(0, (int(x) - 1).bit_length())


@triton.jit
def _sel_tile(bits_ptr, rows, row_ok, offs_n, n_ok, NW):
    """(BS, BN) int1 tile of the selection bitmask: bit n % 32 of word n // 32 of each row."""
    w = tl.load(bits_ptr + rows[:, None] * NW + (offs_n // 32)[None, :], mask=row_ok[:, None] & n_ok[None, :],
                other=0)
    return ((w >> (offs_n % 32)[None, :]) & 1) != 0


@triton.jit
def _rows_for_volume(s2v_ptr, offs_s, Ns, v, row_s, row_v, OWN: tl.constexpr):
    s_ok = offs_s < Ns
    if OWN:
        row_ok = s_ok & (tl.load(s2v_ptr + offs_s, mask=s_ok, other=-1) == v)
    else:
        row_ok = s_ok
    return offs_s.to(tl.int64) * row_s + v * row_v, row_ok  # int64: Ns·V·D overflows int32 in retrieval


@triton.jit
def _select_kernel(S, P, S2V, PMASK, IDX, VAL, SCORE, BITS,
                   Ns, N, D, K, NW, stride_s, stride_pv, stride_pn, row_s, row_v,
                   OWN: tl.constexpr, HAS_MASK: tl.constexpr, IEEE: tl.constexpr,
                   BS: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, KP: tl.constexpr):
    pid_s = tl.program_id(0)
    v = tl.program_id(1)
    offs_s = pid_s * BS + tl.arange(0, BS)
    s_ok = offs_s < Ns
    rows, row_ok = _rows_for_volume(S2V, offs_s, Ns, v, row_s, row_v, OWN)
    if tl.max(row_ok.to(tl.int32), axis=0) > 0:  # 'own': most (block, volume) programs have nothing to do
        top = tl.full([BS, KP], _PAD_KEY, tl.int64)
        p_base = P + v.to(tl.int64) * stride_pv
        for n0 in range(0, N, BN):
            offs_n = n0 + tl.arange(0, BN)
            n_ok = offs_n < N
            acc = tl.zeros([BS, BN], tl.float32)
            for d0 in range(0, D, BD):
                offs_d = d0 + tl.arange(0, BD)
                d_ok = offs_d < D
                s_t = tl.load(S + offs_s[:, None] * stride_s + offs_d[None, :], mask=s_ok[:, None] & d_ok[None, :],
                              other=0.0)
                p_t = tl.load(p_base + offs_n[:, None] * stride_pn + offs_d[None, :],
                              mask=n_ok[:, None] & d_ok[None, :], other=0.0)
                if IEEE:
                    acc = tl.dot(s_t, tl.trans(p_t), acc, input_precision="ieee")
                else:
                    acc = tl.dot(s_t, tl.trans(p_t), acc)
            if HAS_MASK:
                n_ok = n_ok & (tl.load(PMASK + v * N + offs_n, mask=n_ok, other=0) != 0)
            bits = acc.to(tl.int32, bitcast=True)
            hi = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF).to(tl.int64)
            keys = (hi << 32) | (0xFFFFFFFF - offs_n.to(tl.int64))[None, :]
            keys = tl.where(n_ok[None, :], keys, _PAD_KEY)
            # running list ascending, tile top-K descending: their max is bitonic and holds the union's top-K
            top = tl.maximum(tl.bitonic_merge(top), tl.topk(keys, KP, dim=1))
        top = tl.bitonic_merge(top, descending=True)
        idx = 0xFFFFFFFF - (top & 0xFFFFFFFF)
        hi32 = (top >> 32).to(tl.int32)
        val = tl.where(hi32 >= 0, hi32, hi32 ^ 0x7FFFFFFF).to(tl.float32, bitcast=True)
        kk = tl.arange(0, KP)
        k_ok = kk < K
        out_ok = row_ok[:, None] & k_ok[None, :]
        out = rows[:, None] * K + kk[None, :]
        tl.store(IDX + out, idx, mask=out_ok)
        tl.store(VAL + out, val, mask=out_ok)
        tl.store(SCORE + rows, tl.sum(tl.where(k_ok[None, :], val, 0.0), axis=1) / K, mask=row_ok)
        bit = tl.full([BS, KP], 1, tl.int32) << (idx % 32).to(tl.int32)
        tl.atomic_or(BITS + rows[:, None] * NW + idx // 32, bit, mask=out_ok)


@triton.jit
def _pool_kernel(P, S2V, BITS, POOLED, Ns, N, D, K, NW, stride_pv, stride_pn, row_s, row_v,
                 OWN: tl.constexpr, IEEE: tl.constexpr, BS: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr):
    pid_s = tl.program_id(0)
    v = tl.program_id(1)
    offs_d = tl.program_id(2) * BD + tl.arange(0, BD)
    d_ok = offs_d < D
    offs_s = pid_s * BS + tl.arange(0, BS)
    rows, row_ok = _rows_for_volume(S2V, offs_s, Ns, v, row_s, row_v, OWN)
    if tl.max(row_ok.to(tl.int32), axis=0) > 0:
        p_base = P + v.to(tl.int64) * stride_pv
        acc = tl.zeros([BS, BD], tl.float32)
        for n0 in range(0, N, BN):
            offs_n = n0 + tl.arange(0, BN)
            n_ok = offs_n < N
            sel = _sel_tile(BITS, rows, row_ok, offs_n, n_ok, NW)
            p_t = tl.load(p_base + offs_n[:, None] * stride_pn + offs_d[None, :], mask=n_ok[:, None] & d_ok[None, :],
                          other=0.0)
            if IEEE:
                acc = tl.dot(sel.to(p_t.dtype), p_t, acc, input_precision="ieee")
            else:
                acc = tl.dot(sel.to(p_t.dtype), p_t, acc)
        tl.store(POOLED + rows[:, None] * D + offs_d[None, :], acc / K, mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def _grad_patches_kernel(H, S2V, BITS, DP, Ns, N, D, NW, row_s, row_v,
                         OWN: tl.constexpr, IEEE: tl.constexpr, BS: tl.constexpr, BN: tl.constexpr,
                         BD: tl.constexpr):
    offs_n = tl.program_id(0) * BN + tl.arange(0, BN)
    v = tl.program_id(1)
    offs_d = tl.program_id(2) * BD + tl.arange(0, BD)
    n_ok = offs_n < N
    d_ok = offs_d < D
    acc = tl.zeros([BN, BD], tl.float32)
    for s0 in range(0, Ns, BS):
        offs_s = s0 + tl.arange(0, BS)
        rows, row_ok = _rows_for_volume(S2V, offs_s, Ns, v, row_s, row_v, OWN)
        sel = _sel_tile(BITS, rows, row_ok, offs_n, n_ok, NW).to(tl.float32)
        h = tl.load(H + rows[:, None] * D + offs_d[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        if IEEE:
            acc = tl.dot(tl.trans(sel), h, acc, input_precision="ieee")
        else:
            acc = tl.dot(tl.trans(sel), h, acc)
    dst = DP + v.to(tl.int64) * N * D + offs_n[:, None] * D + offs_d[None, :]
    tl.store(dst, acc.to(DP.dtype.element_ty), mask=n_ok[:, None] & d_ok[None, :])


def _blocks(Ns: int, N: int, D: int, kp: int) -> tuple[int, int, int]:
    """Block sizes: (BS, BN, BD), shrunk for tiny problems (the interpreter pays per element)."""
    bs = min(64, max(16, _pow2(Ns)))
    bn = max(kp, min(64, max(16, _pow2(N))))
    bd = min(64, max(16, _pow2(D)))
    return bs, bn, bd


def _layout(Ns: int, V: int, own: bool) -> tuple[int, int, int]:
    """(rows, row_s, row_v): 'own' writes row s, 'all' writes row s·V + v."""
    return (Ns, 1, 0) if own else (Ns * V, V, 1)


# --------------------------------------------------------------------------------------------------------
# torch.library ops: sentence_to_volume None means 'all'.  The selection outputs are not differentiable.
# --------------------------------------------------------------------------------------------------------
@torch.library.custom_op("simcrop_kernels::topk_sim_fwd", mutates_args=())
def topk_sim_fwd(sentences: Tensor, patches: Tensor, k: int, sentence_to_volume: Tensor | None,
                 patch_mask: Tensor | None, compute_pooled: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """indices (R, K) int64, values (R, K) fp32, score (R,) fp32, pooled (R, D) fp32 or (0,), bits (R, NW) int32."""
    S, P = sentences.contiguous(), patches.contiguous()
    Ns, D = S.shape
    V, N, _ = P.shape
    own = sentence_to_volume is not None
    R, row_s, row_v = _layout(Ns, V, own)
    kp = _pow2(k)
    BS, BN, BD = _blocks(Ns, N, D, kp)
    NW = triton.cdiv(N, 32)
    dev = S.device
    idx = torch.empty(R, k, device=dev, dtype=torch.int64)
    val = torch.empty(R, k, device=dev, dtype=torch.float32)
    score = torch.empty(R, device=dev, dtype=torch.float32)
    bits = torch.zeros(R, NW, device=dev, dtype=torch.int32)
    s2v = sentence_to_volume.contiguous() if own else idx  # dummy pointer when unused
    pmask = patch_mask.contiguous().to(torch.int8) if patch_mask is not None else idx
    ieee = S.dtype == torch.float32
    nblk = triton.cdiv(Ns, BS)
    _select_kernel[(nblk, V)](S, P, s2v, pmask, idx, val, score, bits, Ns, N, D, k, NW, S.stride(0),
                              P.stride(0), P.stride(1), row_s, row_v, OWN=own, HAS_MASK=patch_mask is not None,
                              IEEE=ieee, BS=BS, BN=BN, BD=BD, KP=kp)
    pooled = torch.empty(0, device=dev, dtype=torch.float32)
    if compute_pooled:
        pooled = torch.empty(R, D, device=dev, dtype=torch.float32)
        _pool_kernel[(nblk, V, triton.cdiv(D, BD))](P, s2v, bits, pooled, Ns, N, D, k, NW, P.stride(0),
                                                    P.stride(1), row_s, row_v, OWN=own, IEEE=ieee, BS=BS,
                                                    BN=max(16, min(64, _pow2(N))), BD=BD)
    return idx, val, score, pooled, bits


@topk_sim_fwd.register_fake
def _(sentences, patches, k, sentence_to_volume, patch_mask, compute_pooled):
    Ns, D = sentences.shape
    V, N, _ = patches.shape
    R = Ns if sentence_to_volume is not None else Ns * V
    new = sentences.new_empty
    pooled = new((R, D) if compute_pooled else (0,), dtype=torch.float32)
    return (new((R, k), dtype=torch.int64), new((R, k), dtype=torch.float32), new((R,), dtype=torch.float32),
            pooled, new((R, (N + 31) // 32), dtype=torch.int32))


@torch.library.custom_op("simcrop_kernels::topk_sim_bwd", mutates_args=())
def topk_sim_bwd(sentences: Tensor, patches: Tensor, bits: Tensor, pooled: Tensor, grad_score: Tensor,
                 grad_pooled: Tensor | None, sentence_to_volume: Tensor | None, k: int) -> tuple[Tensor, Tensor]:
    """dS (Ns, D) and dP (V, N, D) in the input dtypes; see the module docstring for the math."""
    S = sentences.contiguous()
    Ns, D = S.shape
    V, N, _ = patches.shape
    own = sentence_to_volume is not None
    R, row_s, row_v = _layout(Ns, V, own)
    gs = grad_score.float().reshape(R, 1)
    H = gs * (S.float() if own else S.float().repeat_interleave(V, dim=0))
    if grad_pooled is not None:
        H = H + grad_pooled.float().reshape(R, D)
    H = (H / k).contiguous()
    dS = (gs * pooled).reshape(Ns, -1, D).sum(1)
    dP = torch.empty(V, N, D, device=S.device, dtype=patches.dtype)
    BS, BN, BD = _blocks(Ns, N, D, 1)
    s2v = sentence_to_volume.contiguous() if own else bits
    _grad_patches_kernel[(triton.cdiv(N, BN), V, triton.cdiv(D, BD))](
        H, s2v, bits, dP, Ns, N, D, bits.shape[1], row_s, row_v, OWN=own, IEEE=patches.dtype == torch.float32,
        BS=BS, BN=BN, BD=BD)
    return dS.to(sentences.dtype), dP


@topk_sim_bwd.register_fake
def _(sentences, patches, bits, pooled, grad_score, grad_pooled, sentence_to_volume, k):
    return torch.empty_like(sentences), torch.empty_like(patches)


def _setup_context(ctx, inputs, output):
    sentences, patches, k, s2v, _, _ = inputs
    idx, val, score, pooled, bits = output
    ctx.mark_non_differentiable(idx, val, bits)
    ctx.save_for_backward(sentences, patches, bits, pooled, s2v)
    ctx.k = k


def _backward(ctx, g_idx, g_val, g_score, g_pooled, g_bits):
    sentences, patches, bits, pooled, s2v = ctx.saved_tensors
    if pooled.numel() == 0:
        raise RuntimeError("topk_sim_fwd was run with compute_pooled=False; its backward needs pooled")
    if g_score is None:
        g_score = pooled.new_zeros(pooled.shape[0])
    dS, dP = topk_sim_bwd(sentences, patches, bits, pooled, g_score, g_pooled, s2v, ctx.k)
    return dS, dP, None, None, None, None


torch.library.register_autograd("simcrop_kernels::topk_sim_fwd", _backward, setup_context=_setup_context)


def topk_similarity_triton(sentences: Tensor, patches: Tensor, k: int, *, mode: str = "own",
                           sentence_to_volume: Tensor | None = None, patch_mask: Tensor | None = None,
                           return_pooled: bool = True):
    """Triton path; same contract as `reference.topk_similarity_reference` (arguments already checked)."""
    if not 1 <= k <= MAX_K:
        raise ValueError(f"the Triton path supports 1 <= k <= {MAX_K}, got {k}")
    if sentences.dtype != patches.dtype:
        raise ValueError(f"sentences and patches must share a dtype, got {sentences.dtype} and {patches.dtype}")
    Ns, D = sentences.shape
    V = patches.shape[0]
    own = mode == "own"
    needs_grad = torch.is_grad_enabled() and (sentences.requires_grad or patches.requires_grad)
    idx, val, score, pooled, _ = torch.ops.simcrop_kernels.topk_sim_fwd(
        sentences, patches, k, sentence_to_volume if own else None, patch_mask, return_pooled or needs_grad)
    lead = (Ns,) if own else (Ns, V)
    pooled = pooled.view(*lead, D) if return_pooled else None
    return idx.view(*lead, k), val.view(*lead, k), score.view(lead), pooled
