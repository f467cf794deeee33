"""Retrieval: scores from the kernel, recall on constructed cases with a known answer, the whole task."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from simcrop.evaluate import retrieval
from simcrop.evaluate.retrieval import (evaluate_retrieval, report_volume_scores, retrieval_both_ways,
                                        sentence_volume_scores)
from simcrop_kernels import topk_similarity


def _matched_features(n: int, shift: int = 0, sentences_per_report: int = 2, seed: int = 0):
    """Report i's sentences point along axis (i + shift) % n; volume v holds a patch along axis v."""
    g = torch.Generator().manual_seed(seed)
    D, N = 2 * n, 5
    patches = torch.randn(n, N, D, generator=g) * 0.05
    patches[:, :, :n] = 0
    patches[torch.arange(n), 0, torch.arange(n)] = 1.0
    sentences = torch.randn(n * sentences_per_report, D, generator=g) * 0.05
    s2r = torch.arange(n).repeat_interleave(sentences_per_report)
    sentences[:, :n] = 0
    sentences[torch.arange(len(s2r)), (s2r + shift) % n] = 1.0
    return F.normalize(sentences, dim=-1), s2r, F.normalize(patches, dim=-1)


def test_report_i_matches_volume_i():
    sentences, s2r, patches = _matched_features(7)
    scores = report_volume_scores(sentences, s2r, 7, patches, k=2)
    ids = [f"scan{i}" for i in range(7)]
    out = retrieval_both_ways(scores, ids, ids)
    for direction in ("report_to_volume", "volume_to_report"):
        assert out[direction]["recall@1"] == 1.0 and out[direction]["map"] == 1.0
        assert out[direction]["chance_recall@1"] == pytest.approx(1 / 7)


def test_shifted_answers_give_the_known_recall():
    """Report i scores ~1 against volume i + 1, ~0.5 against its own volume i, ~0 elsewhere: its own
    volume is always second, so recall@1 = 0, recall@2 = 1 and MAP = 1/2."""
    sentences, s2r, patches = _matched_features(6, shift=1)
    scores = report_volume_scores(sentences, s2r, 6, patches, k=1)
    scores += 0.5 * torch.eye(6)
    out = retrieval_both_ways(scores, list("abcdef"), list("abcdef"), ks=(1, 2))
    assert out["report_to_volume"]["recall@1"] == 0.0 and out["report_to_volume"]["recall@2"] == 1.0
    assert out["report_to_volume"]["map"] == pytest.approx(0.5)


def test_reconstructions_of_one_scan_are_all_relevant():
    scores = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.3, 0.7]])      # reports of scans A, B; volumes A1, A2, B1
    out = retrieval_both_ways(scores, ["A", "B"], ["A", "A", "B"], ks=(1,))
    assert out["report_to_volume"]["map"] == 1.0 and out["volume_to_report"]["recall@1"] == 1.0


def test_scores_are_the_mean_of_kernel_scores_and_chunking_changes_nothing(monkeypatch):
    sentences, s2r, patches = _matched_features(5, sentences_per_report=3, seed=3)
    sentences = F.normalize(sentences + 0.3 * torch.randn_like(sentences), dim=-1)
    ref = topk_similarity(sentences, patches, 3, mode="all").score.reshape(5, 3, 5).mean(1)
    assert torch.allclose(report_volume_scores(sentences, s2r, 5, patches, 3), ref, atol=1e-6)
    full = sentence_volume_scores(sentences, patches, 3)
    monkeypatch.setattr(retrieval, "CHUNK_BYTES", 1)                 # one sentence per chunk
    assert torch.allclose(sentence_volume_scores(sentences, patches, 3), full, atol=1e-6)
    with pytest.raises(ValueError, match="no sentence"):
        report_volume_scores(sentences[:3], s2r[:3], 5, patches, 3)


def test_evaluate_retrieval_on_a_tiny_run(checkpoints, tiny_run, tmp_path, text_encoder):
    out = tmp_path / "retrieval.json"
    evaluate_retrieval(None, checkpoints["simcrop"], tiny_run, out, cache_dir=tmp_path / "cache", progress=False,
                       text_encoder=text_encoder)
    saved = json.loads(out.read_text())
    assert saved["n_reports"] == 3 and saved["n_volumes"] == 4 and saved["n_sentences"] == 8
    assert saved["n_sentences_in_reports"] == 8
    r2v, v2r = saved["report_to_volume"], saved["volume_to_report"]
    assert r2v["n_queries"] == 3 and r2v["n_items"] == 4 and v2r["n_queries"] == 4 and v2r["n_items"] == 3
    assert r2v["recall@10"] == 1.0 and v2r["recall@5"] == 1.0                 # fewer items than k
    assert 0.0 <= r2v["map"] <= 1.0 and 0.0 <= v2r["recall@1"] <= 1.0
