"""Triton kernels against a float64 reference: in the CPU interpreter (tiny shapes: ~1 s per program), or
compiled on CUDA with SIMCROP_KERNEL_DEVICE=cuda (simcrop_kernels.testing). Inputs are built on the CPU and
moved to the device inside `_run` (results come back), so every test reads the same on both.

bf16 `tl.dot` is wrong in the interpreter, so bf16 is a `kernel_dtype` (conftest) on CUDA only."""
from __future__ import annotations

import pytest
import torch

from simcrop_kernels import TopKResult, testing, topk_similarity
from simcrop_kernels.reference import pool_from_indices, select_topk

DEVICE = torch.device(testing.device())

S2V = torch.tensor([1, 0, 0, 2, 1, 1, 0, 2, 2, 0, 1, 0, 2])


def _s2v(Ns, V):
    return S2V[:Ns] % V


def _ref_sims(S, P, mode, s2v):
    """float64 similarities (Ns, V, N) or (Ns, N) of the (already rounded) inputs."""
    sims = torch.einsum("sd,vnd->svn", S.double(), P.double())
    return sims[torch.arange(S.shape[0]), s2v] if mode == "own" else sims


def _to(x, device):
    return x.to(device) if isinstance(x, torch.Tensor) else x


def _run(S, P, k, mode, s2v, **kw):
    """The Triton path on the test device; CPU tensors in, CPU tensors out (differentiable moves)."""
    kw = {name: _to(value, DEVICE) for name, value in kw.items()}
    res = topk_similarity(_to(S, DEVICE), _to(P, DEVICE), k, mode=mode,
                          sentence_to_volume=_to(s2v, DEVICE) if mode == "own" else None, backend="triton", **kw)
    return TopKResult(*(_to(x, "cpu") for x in res))


def _separated(Ns, V, N, D, dtype, seed=0):
    """Similarities that are a random permutation of a grid with step 1/N per (sentence, volume), hidden
    behind a random rotation, so the top-K index set is unambiguous at any input precision."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack([torch.stack([torch.randperm(N, generator=g) for _ in range(V)]) for _ in range(Ns)])
    P = torch.zeros(V, N, D, dtype=torch.float64)
    P[..., :Ns] = (grid.permute(1, 2, 0).double() + 1) / N * 0.5  # P[v, n, s] = sim(s, v, n)
    P[..., Ns] = 0.3
    S = torch.eye(Ns, D, dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    return (S @ Q).to(dtype), (P @ Q).to(dtype)


@pytest.mark.parametrize("mode", ["own", "all"])
def test_well_separated_scores_give_identical_indices(mode, kernel_dtype):
    Ns, V, N, D, K = 6, 2, 90, 24, 8
    S, P = _separated(Ns, V, N, D, kernel_dtype)
    s2v = _s2v(Ns, V)
    res = _run(S, P, K, mode, s2v)
    ref_idx, ref_val = select_topk(_ref_sims(S, P, mode, s2v), K)
    assert torch.equal(res.indices, ref_idx)
    torch.testing.assert_close(res.values, ref_val.float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.score, ref_val.mean(-1).float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["own", "all"])
def test_random_inputs_close_values_and_valid_selection(mode, kernel_dtype, make_inputs):
    Ns, V, N, D, K = 7, 2, 150, 40, 16
    S, P = make_inputs(Ns, V, N, D, kernel_dtype, seed=4)
    s2v = _s2v(Ns, V)
    res = _run(S, P, K, mode, s2v)
    sims = _ref_sims(S, P, mode, s2v)
    ref_val = sims.topk(K, dim=-1).values
    tol = 1e-5
    torch.testing.assert_close(res.values.double(), ref_val, atol=tol, rtol=0)
    assert (res.values[..., :-1] >= res.values[..., 1:]).all()  # descending
    chosen = sims.gather(-1, res.indices)
    assert (chosen >= ref_val[..., -1:] - tol).all()
    assert (res.indices.sort(-1).values.diff(dim=-1) > 0).all()  # unique
    ref_pooled, ref_score = pool_from_indices(S.double(), P.double(), res.indices, s2v if mode == "own" else None)
    torch.testing.assert_close(res.pooled.double(), ref_pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.score.double(), ref_score, atol=1e-5, rtol=1e-5)


def test_ties_resolve_to_lower_index_deterministically():
    # entries are multiples of 1/4 in fp16: every dot product is exact in fp32, and ties are everywhere
    g = torch.Generator().manual_seed(5)
    S = (torch.randint(-2, 3, (5, 16), generator=g) / 4).half()
    P = (torch.randint(-2, 3, (2, 70, 16), generator=g) / 4).half()
    P[:, 40:60] = P[:, 0:20]  # explicit duplicates: the copies must lose
    first = _run(S, P, 12, "all", None, return_pooled=False)
    again = _run(S, P, 12, "all", None, return_pooled=False)
    ref_idx, ref_val = select_topk(_ref_sims(S, P, "all", None).float(), 12)
    assert torch.equal(first.indices, ref_idx)
    assert torch.equal(first.values, ref_val)
    assert torch.equal(first.indices, again.indices)
    sims = _ref_sims(S, P, "all", None)
    kth = ref_val[..., -1:].double()
    assert ((sims == kth).sum(-1) > 1).any(), "the data should tie at the K-th value"


@pytest.mark.parametrize("mode", ["own", "all"])
@pytest.mark.parametrize("return_pooled", [True, False])
def test_gradients_match_reference_autograd_with_kernel_indices(mode, return_pooled, make_inputs):
    Ns, V, N, D, K = 5, 3, 70, 20, 6
    S, P = make_inputs(Ns, V, N, D, torch.float32, seed=6)
    s2v = _s2v(Ns, V)
    Sg, Pg = S.clone().requires_grad_(), P.clone().requires_grad_()
    res = _run(Sg, Pg, K, mode, s2v, return_pooled=return_pooled)
    g = torch.Generator().manual_seed(7)
    gs = torch.randn(res.score.shape, generator=g)
    gp = torch.randn(res.score.shape + (D,), generator=g)
    loss = (res.score * gs).sum() + ((res.pooled * gp).sum() if return_pooled else 0)
    loss.backward()

    Sr, Pr = S.double().requires_grad_(), P.double().requires_grad_()
    pooled, score = pool_from_indices(Sr, Pr, res.indices, s2v if mode == "own" else None)
    ref = (score * gs.double()).sum() + ((pooled * gp.double()).sum() if return_pooled else 0)
    ref.backward()
    torch.testing.assert_close(Sg.grad.double(), Sr.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(Pg.grad.double(), Pr.grad, atol=1e-5, rtol=1e-5)

    Sg2, Pg2 = S.clone().requires_grad_(), P.clone().requires_grad_()  # deterministic: bitwise equal rerun
    res2 = _run(Sg2, Pg2, K, mode, s2v, return_pooled=return_pooled)
    ((res2.score * gs).sum() + ((res2.pooled * gp).sum() if return_pooled else 0)).backward()
    assert torch.equal(Pg.grad, Pg2.grad) and torch.equal(Sg.grad, Sg2.grad)


@pytest.mark.parametrize("Ns,V,N,D,K,mode", [
    (1, 1, 17, 5, 1, "all"),      # one sentence, one volume, K = 1, D below the block
    (13, 3, 101, 33, 5, "own"),   # nothing a multiple of a block; K not a power of two
    (3, 2, 130, 16, 64, "all"),   # K = 64 (the maximum), N just above two tiles
    (17, 1, 33, 8, 3, "own"),     # sentences spill into a second block, single volume
])
def test_odd_shapes(Ns, V, N, D, K, mode, make_inputs):
    S, P = make_inputs(Ns, V, N, D, torch.float32, seed=Ns)
    s2v = torch.arange(Ns) % V
    res = _run(S, P, K, mode, s2v)
    sims = _ref_sims(S, P, mode, s2v)
    ref_val = sims.topk(K, dim=-1).values
    lead = (Ns,) if mode == "own" else (Ns, V)
    assert res.indices.shape == lead + (K,) and res.pooled.shape == lead + (D,) and res.score.shape == lead
    torch.testing.assert_close(res.values.double(), ref_val, atol=1e-5, rtol=0)
    assert (sims.gather(-1, res.indices) >= ref_val[..., -1:] - 1e-5).all()
    assert (res.indices.sort(-1).values.diff(dim=-1) > 0).all()
    ref_pooled, _ = pool_from_indices(S.double(), P.double(), res.indices, s2v if mode == "own" else None)
    torch.testing.assert_close(res.pooled.double(), ref_pooled, atol=1e-5, rtol=1e-5)


def test_patch_mask_matches_reference(make_inputs):
    S, P = make_inputs(4, 2, 60, 16, torch.float32, seed=8)
    pmask = torch.rand(2, 60, generator=torch.Generator().manual_seed(9)) > 0.5
    res = _run(S, P, 4, "all", None, patch_mask=pmask)
    ref = topk_similarity(S.double(), P.double(), 4, mode="all", patch_mask=pmask, backend="reference")
    assert torch.equal(res.indices, ref.indices)
    assert pmask[torch.arange(2)[None, :, None], res.indices].all()


def test_custom_ops_opcheck_and_compile(make_inputs):
    """The torch.library registration: schema, fake (meta) kernels, autograd; and no graph break."""
    import simcrop_kernels.topk_triton  # noqa: F401  (the ops register when the module is imported)

    S, P = make_inputs(3, 2, 20, 16, torch.float32, seed=10)
    S, P = S.to(DEVICE), P.to(DEVICE)
    Sg, Pg = S.clone().requires_grad_(), P.clone().requires_grad_()
    torch.library.opcheck(torch.ops.simcrop_kernels.topk_sim_fwd.default, (Sg, Pg, 4, None, None, True),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))

    def loss(S, P):
        r = topk_similarity(S, P, 4, mode="all", backend="triton")
        return r.score.sum() + r.pooled.sum()

    out = torch.compile(loss, backend="aot_eager", fullgraph=True)(Sg, Pg)
    out.backward()
    S2, P2 = S.clone().requires_grad_(), P.clone().requires_grad_()
    loss(S2, P2).backward()
    torch.testing.assert_close(out, loss(S, P))
    torch.testing.assert_close(Pg.grad, P2.grad)


def test_package_attribute_stays_the_function():
    # a submodule named like the function would replace it on the package once imported lazily
    import simcrop_kernels
    import simcrop_kernels.topk_triton  # noqa: F401
    assert callable(simcrop_kernels.topk_similarity) and simcrop_kernels.topk_similarity is topk_similarity


@pytest.mark.skipif(not testing.on_cuda(), reason="bf16 tl.dot is wrong in the interpreter; CUDA only "
                    f"({testing.ENV}=cuda)")
def test_bfloat16_on_cuda(make_inputs):
    S, P = make_inputs(40, 3, 700, 96, torch.bfloat16, seed=11)
    S, P = S.cuda(), P.cuda()
    res = topk_similarity(S, P, 32, mode="all", backend="triton")
    sims = _ref_sims(S, P, "all", None)
    ref_val = sims.topk(32, dim=-1).values
    torch.testing.assert_close(res.values.double(), ref_val, atol=1e-4, rtol=0)
    assert (sims.gather(-1, res.indices) >= ref_val[..., -1:] - 1e-4).all()
