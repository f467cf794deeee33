"""The public entry point: backend choice, argument checks, result shapes."""
from __future__ import annotations

import pytest
import torch

import simcrop_kernels
from simcrop_kernels import TopKResult, testing, topk_similarity
from simcrop_kernels import dispatch


def test_public_api_is_small():
    assert simcrop_kernels.__all__ == ["TopKResult", "topk_similarity"]


def test_auto_uses_reference_on_cpu_and_chunked_when_big(make_inputs, monkeypatch):
    S, P = make_inputs(4, 3, 20, 8)
    assert dispatch.resolve_backend("auto", S, P, pairs=12) == "reference"
    monkeypatch.setattr(dispatch, "AUTO_CHUNK_BYTES", 100)
    assert dispatch.resolve_backend("auto", S, P, pairs=12) == "chunked"


@pytest.mark.skipif(testing.on_cuda(), reason="an interpreter session only (the CUDA run switches it off)")
def test_auto_on_cpu_never_picks_the_interpreter(make_inputs):
    # conftest sets TRITON_INTERPRET=1 for the whole session; other packages' CPU tests must stay fast
    S, P = make_inputs(4, 3, 20, 8)
    assert dispatch.interpreter_requested()
    assert dispatch.resolve_backend("auto", S, P, pairs=4) == "reference"
    assert dispatch.resolve_backend("triton", S, P, pairs=4) == "triton"


@pytest.mark.skipif(not testing.on_cuda(), reason=f"CUDA only ({testing.ENV}=cuda)")
def test_auto_picks_triton_for_cuda_tensors(make_inputs):
    S, P = make_inputs(4, 3, 20, 8)
    S, P = S.cuda(), P.cuda()
    assert not dispatch.interpreter_requested()
    assert dispatch.resolve_backend("auto", S, P, pairs=4) == "triton"
    auto = topk_similarity(S, P, 4, mode="all")
    reference = topk_similarity(S.cpu(), P.cpu(), 4, mode="all", backend="reference")
    assert torch.equal(auto.indices.cpu(), reference.indices)


def test_triton_on_cpu_without_interpreter_raises(make_inputs, monkeypatch):
    S, P = make_inputs(4, 3, 20, 8)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        topk_similarity(S, P, 4, mode="all", backend="triton")


@pytest.mark.parametrize("bad", [dict(backend="cuda"), dict(mode="both"), dict(k=0), dict(k=21),
                                 dict(sentence_to_volume=torch.tensor([0, 1]))])
def test_invalid_arguments_raise_value_error(bad, make_inputs):
    S, P = make_inputs(4, 3, 20, 8)
    kw = dict(k=4, mode="own", sentence_to_volume=torch.tensor([0, 1, 2, 2])) | bad
    with pytest.raises(ValueError):
        topk_similarity(S, P, kw.pop("k"), **kw)


def test_triton_rejects_k_above_64(make_inputs):
    S, P = make_inputs(2, 1, 80, 16)
    with pytest.raises(ValueError, match="k <= 64"):
        topk_similarity(S, P, 65, mode="all", backend="triton")


@pytest.mark.parametrize("backend", ["reference", "chunked"])
@pytest.mark.parametrize("mode", ["own", "all"])
def test_result_shapes(backend, mode, make_inputs):
    Ns, V, N, D, K = 5, 3, 20, 8, 4
    S, P = make_inputs(Ns, V, N, D)
    s2v = torch.tensor([0, 1, 2, 2, 1])
    res = topk_similarity(S, P, K, mode=mode, sentence_to_volume=s2v, backend=backend)
    lead = (Ns,) if mode == "own" else (Ns, V)
    assert isinstance(res, TopKResult)
    assert res.indices.shape == lead + (K,) and res.indices.dtype == torch.int64
    assert res.values.shape == lead + (K,) and res.values.dtype == torch.float32
    assert res.score.shape == lead and res.pooled.shape == lead + (D,)
    assert topk_similarity(S, P, K, mode=mode, sentence_to_volume=s2v, backend=backend,
                           return_pooled=False).pooled is None


def test_own_without_mapping_pairs_sentence_i_with_volume_i(make_inputs):
    S, P = make_inputs(3, 3, 20, 8)
    a = topk_similarity(S, P, 4, mode="own")
    b = topk_similarity(S, P, 4, mode="own", sentence_to_volume=torch.arange(3))
    assert torch.equal(a.indices, b.indices)


@pytest.mark.parametrize("V", [2, 12])  # fewer volumes than D: GEMM then pick; more: gather the volumes
def test_own_is_the_diagonal_of_all(V, make_inputs):
    S, P = make_inputs(4, V, 30, 8)
    s2v = torch.tensor([1, 0, 0, 1])
    own = topk_similarity(S, P, 5, mode="own", sentence_to_volume=s2v)
    every = topk_similarity(S, P, 5, mode="all")
    assert torch.equal(own.indices, every.indices[torch.arange(4), s2v])
    torch.testing.assert_close(own.pooled, every.pooled[torch.arange(4), s2v])
