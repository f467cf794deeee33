"""Report ↔ volume retrieval over the whole test split.

    score(r, v) = mean over the sentences s of report r of S(s, v),
    S(s, v)     = mean of the top-K cosines of sentence s against the patches of volume v
                  (`simcrop_kernels.topk_similarity`, mode "all": each sentence against every volume)

report → volume ranks the volumes for each report; volume → report ranks the reports for each volume
(the transposed matrix). Reconstructions of one scan share its report, so the report is kept once per
scan_id and every volume of that scan is relevant to it (and it to each of them).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from simcrop_kernels import topk_similarity
from simcrop.evaluate.cases import add_features, load_context, report_items
from simcrop.evaluate.embed import encode_reports
from simcrop.evaluate.metrics import json_safe, relevance_from_ids, retrieval_metrics
from simcrop.io import write_json_atomic

log = logging.getLogger(__name__)
KS = (1, 5, 10)
CHUNK_BYTES = 1 << 28          # per sentence chunk: similarities + top-K values/indices against every volume


def sentence_volume_scores(sentences: torch.Tensor, patches: torch.Tensor, k: int, backend: str = "auto",
                           progress: bool = False) -> torch.Tensor:
    """sentences (Ns, D), patches (V, N, D), normalised → (Ns, V) float32 top-K mean similarity.

    Sentences go through the kernel in chunks, so the (chunk, V, K) indices and values it returns stay
    within ~256 MB however large the test set.
    """
    V, N, _ = patches.shape
    per_sentence = V * (4 * N + 12 * k)
    chunk = max(1, CHUNK_BYTES // per_sentence)
    out = []
    for start in tqdm(range(0, sentences.shape[0], chunk), desc="top-K scores", unit="chunk", disable=not progress):
        res = topk_similarity(sentences[start:start + chunk], patches, k, mode="all", return_pooled=False,
                              backend=backend)
        out.append(res.score.float().cpu())
    return torch.cat(out)


def report_volume_scores(sentences: torch.Tensor, sentence_to_report: torch.Tensor, n_reports: int,
                         patches: torch.Tensor, k: int, backend: str = "auto", progress: bool = False) -> torch.Tensor:
    """Mean over each report's sentences of the top-K score → (R, V) float32.

    sentence_to_report (Ns,) int64 in 0..R-1; every report needs at least one sentence.
    """
    per_sentence = sentence_volume_scores(sentences, patches, k, backend, progress)        # (Ns, V)
    s2r = sentence_to_report.long().cpu()
    counts = torch.bincount(s2r, minlength=n_reports).float()
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"reports {missing[:5]} have no sentence feature")
    sums = torch.zeros(n_reports, patches.shape[0]).index_add_(0, s2r, per_sentence)          # CPU
    return sums / counts[:, None]


def retrieval_both_ways(scores: torch.Tensor, report_ids: Sequence[str], volume_ids: Sequence[str],
                        ks: Sequence[int] = KS) -> dict:
    """scores (R, V); ids: the scan_id of each report and each volume → metrics both ways."""
    relevant = relevance_from_ids(report_ids, volume_ids)                                  # (R, V)
    return {"report_to_volume": retrieval_metrics(scores.numpy(), relevant, ks),
            "volume_to_report": retrieval_metrics(scores.T.numpy(), relevant.T, ks)}


def evaluate_retrieval(cfg, checkpoint, run_dir, out_json, *, split: str = "test", topk: int | None = None,
                       ks: Sequence[int] = KS, text_max_tokens: int | None = None, batch_size: int = 2,
                       cache_dir=None, device: str = "cpu", progress: bool = True, text_encoder=None) -> dict:
    """Report → volume and volume → report recall@k and MAP over `split`; writes `out_json`.

    text_max_tokens: report tokens read (default: the checkpoint's, as in training); sentences past it
    do not score (`n_sentences` counts those that do).

    cfg: the run's Config (reserved for the evaluate keys; the model comes from the checkpoint).
    Raises NotApplicableError for a model without a text side (MAE).
    """
    ctx = load_context(checkpoint, device, text_encoder)
    items = report_items(run_dir, split, ctx.model_cfg.model.img_size)
    add_features(ctx, checkpoint, run_dir, items, topk, cache_dir, batch_size, progress)
    reports = {}
    for item in items:                         # one report per scan: reconstructions share it
        reports.setdefault(item["scan_id"], item)
    report_ids = list(reports)
    enc = encode_reports(ctx.model, list(reports.values()),
                         max_tokens=text_max_tokens or ctx.model_cfg.model.text_max_tokens, progress=progress)
    scores = report_volume_scores(enc["features"].to(device), enc["sentence_to_report"], len(report_ids),
                                  ctx.patches.to(device), ctx.k, progress=progress)
    result = retrieval_both_ways(scores, report_ids, [it["scan_id"] for it in items], ks)
    metrics = {"task": "retrieval", "applicable": True, "split": split, **ctx.info, "n_reports": len(report_ids),
               "n_sentences": int(enc["features"].shape[0]),
               "n_sentences_in_reports": sum(len(r["sentences"]) for r in reports.values()), **result}
    write_json_atomic(Path(out_json), json_safe(metrics))
    r2v, v2r = result["report_to_volume"], result["volume_to_report"]
    log.info("retrieval %s (%d reports, %d volumes): report→volume R@1 %.3f MAP %.3f; volume→report R@1 %.3f "
             "MAP %.3f", split, len(report_ids), len(items), r2v["recall@1"], r2v["map"], v2r["recall@1"],
             v2r["map"])
    return metrics
