"""The PyTorch paths: tie rule, plain vs chunked (forward and backward), argument checks, torch.compile."""
from __future__ import annotations

import time

import pytest
import torch

from simcrop_kernels.reference import (pack_keys, pool_from_indices, select_topk, topk_similarity_chunked,
                                       topk_similarity_reference)


def test_pack_keys_orders_by_value_then_lower_index():
    sims = torch.tensor([[-0.5, 0.25, -2.0, 0.25, 1e-30, 3.0, -1e-30, 0.25]])
    idx, val = select_topk(sims, 8)
    assert idx.tolist() == [[5, 1, 3, 7, 4, 6, 0, 2]]
    assert torch.equal(val, sims[:, idx[0]])
    assert torch.equal(pack_keys(sims).argsort(descending=True), idx)


def test_select_topk_respects_valid_mask():
    sims = torch.tensor([[0.9, 0.8, 0.7, 0.1]])
    idx, _ = select_topk(sims, 2, torch.tensor([[False, True, True, True]]))
    assert idx.tolist() == [[1, 2]]


@pytest.mark.parametrize("mode", ["own", "all"])
def test_reference_matches_brute_force(mode, make_inputs):
    S, P = make_inputs(7, 3, 50, 16, torch.float32)
    s2v = torch.tensor([2, 0, 0, 1, 2, 2, 1])
    idx, val, score, pooled = topk_similarity_reference(S, P, 5, mode=mode, sentence_to_volume=s2v)
    sims = torch.einsum("sd,vnd->svn", S.double(), P.double())
    if mode == "own":
        sims = sims[torch.arange(7), s2v]
    ref_val, ref_idx = sims.sort(dim=-1, descending=True, stable=True)
    assert torch.equal(idx, ref_idx[..., :5])
    torch.testing.assert_close(val, ref_val[..., :5].float())
    torch.testing.assert_close(score, ref_val[..., :5].mean(-1).float())
    assert pooled.shape == (score.shape + (16,))


@pytest.mark.parametrize("mode", ["own", "all"])
def test_chunked_matches_reference_forward_and_backward(mode, make_inputs):
    S, P = make_inputs(9, 4, 37, 12, torch.float32, seed=1)
    s2v = torch.tensor([3, 3, 0, 1, 1, 2, 0, 3, 2])
    pmask = torch.rand(4, 37, generator=torch.Generator().manual_seed(2)) > 0.3
    outs, grads = [], []
    for fn, kw in [(topk_similarity_reference, {}), (topk_similarity_chunked, {"chunk_bytes": 3000})]:
        Sg, Pg = S.clone().requires_grad_(), P.clone().requires_grad_()
        res = fn(Sg, Pg, 6, mode=mode, sentence_to_volume=s2v, patch_mask=pmask, **kw)
        g = torch.randn(res[3].shape, generator=torch.Generator().manual_seed(3))
        (res[2].sum() + (res[3] * g).sum()).backward()
        outs.append(res)
        grads.append((Sg.grad, Pg.grad))
    (i0, v0, s0, p0), (i1, v1, s1, p1) = outs
    assert torch.equal(i0, i1)
    vol = s2v[:, None] if mode == "own" else torch.arange(4)[None, :, None]
    assert pmask[vol, i0].all()
    torch.testing.assert_close(v0, v1)
    torch.testing.assert_close(s0, s1)
    torch.testing.assert_close(p0, p1)
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_patch_mask_excludes_patches(make_inputs):
    S, P = make_inputs(5, 2, 30, 8)
    pmask = torch.ones(2, 30, dtype=torch.bool)
    pmask[:, ::2] = False
    for fn in (topk_similarity_reference, topk_similarity_chunked):
        idx = fn(S, P, 4, mode="all", patch_mask=pmask)[0]
        assert (idx % 2 == 1).all()


def test_pool_from_indices_gradcheck(make_inputs):
    S, P = make_inputs(4, 2, 20, 8, torch.float64)
    idx = topk_similarity_chunked(S, P, 3, mode="all")[0]
    Sg, Pg = S.clone().requires_grad_(), P.clone().requires_grad_()
    torch.autograd.gradcheck(lambda s, p: pool_from_indices(s, p, idx, None), (Sg, Pg))


@pytest.mark.parametrize("bad", [dict(k=0), dict(k=21), dict(mode="pairs"), dict(mode="own", sentence_to_volume=None)])
def test_invalid_arguments_raise(bad, make_inputs):
    S, P = make_inputs(3, 2, 20, 8)
    kw = dict(k=4, mode="all") | bad
    k = kw.pop("k")
    with pytest.raises(ValueError):
        topk_similarity_reference(S, P, k, **kw)


@pytest.mark.slow
def test_torch_compile_inductor_reference(make_inputs):
    """Inductor on CPU: ~30 s on two shared cores (C++ codegen), hence `slow`; aot_eager is tested fast below."""
    S, P = make_inputs(6, 2, 40, 16)
    s2v = torch.tensor([0, 0, 1, 1, 1, 0])

    def fn(S, P):
        _, _, score, pooled = topk_similarity_reference(S, P, 4, mode="own", sentence_to_volume=s2v)
        return score.sum() + pooled.square().sum()

    Sg, Pg = S.clone().requires_grad_(), P.clone().requires_grad_()
    t = time.perf_counter()
    compiled = torch.compile(fn, fullgraph=True)
    out = compiled(Sg, Pg)
    out.backward()
    print(f"torch.compile (inductor, CPU) of the reference took {time.perf_counter() - t:.1f} s")
    S2, P2 = S.clone().requires_grad_(), P.clone().requires_grad_()
    ref = fn(S2, P2)
    ref.backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(Sg.grad, S2.grad)
    torch.testing.assert_close(Pg.grad, P2.grad)


@pytest.mark.parametrize("fn", [topk_similarity_reference, topk_similarity_chunked])
def test_torch_compile_aot_eager_full_graph_or_graph_breaks(fn, make_inputs):
    S, P = make_inputs(6, 2, 40, 16)
    Sg = S.clone().requires_grad_()
    fullgraph = fn is topk_similarity_reference  # the chunked path loops in Python: graph breaks are expected

    def loss(S, P):
        return fn(S, P, 4, mode="all")[2].sum()

    out = torch.compile(loss, backend="aot_eager", fullgraph=fullgraph)(Sg, P)
    out.backward()
    S2 = S.clone().requires_grad_()
    loss(S2, P).backward()
    torch.testing.assert_close(Sg.grad, S2.grad)
