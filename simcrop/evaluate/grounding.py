"""Grounding on the synthetic corpus: do a sentence's top-K patches lie on the lesion it describes?

For each Findings sentence that names planted lesions (`lesion_ids`), with L its lesion patches (the
patches of the centre-crop grid holding at least one voxel of those lesions, the mask cropped exactly
like the image) and T its top-K patches in its own volume (`topk_similarity`, mode "own"):

    hit fraction  = |T ∩ L| / K          chance = |L| / N  (the expected value for K random patches)
    pointing game = [best patch ∈ L]     chance = |L| / N
    oracle        = min(|L|, K) / K      (the best any model can do when the lesion covers < K patches)

Means over sentences, and the ratio of each mean to its chance mean, go to the metrics file; heat maps
of a few sentences go beside it. Real data (no lesion masks) gets the figures and no scores.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import nibabel as nib
import torch

from simcrop_kernels import topk_similarity
from simcrop.evaluate.cases import add_features, lesion_mask_path, load_context, report_items
from simcrop.evaluate.embed import (NotApplicableError, encode_reports, encode_sentences, encode_volumes, load_crop,
                                    load_mask_crop)
from simcrop.evaluate.heatmap import heatmap_figure
from simcrop.evaluate.metrics import json_safe
from simcrop.io import write_json_atomic

log = logging.getLogger(__name__)


def lesion_patches(mask: torch.Tensor, lesion_ids: Sequence[int], patch_size: Sequence[int]) -> torch.Tensor:
    """mask (X, Y, Z) int label map on the crop → (N,) bool, patches (h-major, d-minor, the ViT's token
    order) holding at least one voxel of any of `lesion_ids`."""
    (X, Y, Z), (ph, pw, pd) = mask.shape, patch_size
    if X % ph or Y % pw or Z % pd:
        raise ValueError(f"mask shape {tuple(mask.shape)} is not a multiple of the patch size {tuple(patch_size)}")
    hit = torch.isin(mask, torch.as_tensor(list(lesion_ids), dtype=mask.dtype))
    return hit.reshape(X // ph, ph, Y // pw, pw, Z // pd, pd).any(dim=5).any(dim=3).any(dim=1).reshape(-1)


def grounding_scores(indices: torch.Tensor, lesion: torch.Tensor) -> dict[str, torch.Tensor]:
    """indices (Ns, K) int64 top-K patch indices, best first; lesion (Ns, N) bool lesion patches of each
    sentence's volume → per-sentence float64 tensors (Ns,): hit, pointing, chance, oracle, lesion_patches."""
    if indices.shape[0] != lesion.shape[0]:
        raise ValueError(f"indices {tuple(indices.shape)} and lesion {tuple(lesion.shape)} disagree on Ns")
    k, n = indices.shape[1], lesion.shape[1]
    on = torch.gather(lesion, 1, indices.long()).double()                                # (Ns, K)
    size = lesion.sum(1).double()
    return {"hit": on.mean(1), "pointing": on[:, 0], "chance": size / n,
            "oracle": torch.clamp(size, max=k) / k, "lesion_patches": size}


def summarize(per: dict[str, torch.Tensor]) -> dict:
    """Means over sentences and ratios to chance (NaN when there is no sentence)."""
    n = int(per["hit"].numel())

    def mean(key):
        return float(per[key].mean()) if n else float("nan")

    hit, pointing, chance = mean("hit"), mean("pointing"), mean("chance")
    return {"n_sentences": n, "hit_fraction": hit, "hit_fraction_chance": chance,
            "hit_fraction_oracle": mean("oracle"), "hit_ratio_to_chance": hit / chance if n else float("nan"),
            "pointing_game": pointing, "pointing_chance": chance,
            "pointing_ratio_to_chance": pointing / chance if n else float("nan"),
            "lesion_patches_mean": mean("lesion_patches")}


def _grounding_sentences(ctx, run_dir, enc: dict) -> tuple[list[dict], torch.Tensor, dict]:
    """The encoded sentences that name lesions, with their lesion patches (N,) bool each."""
    named = sum(1 for it in ctx.items for rec in it["sentences"] if rec.get("lesion_ids"))
    encoder, skipped = ctx.model.encoder, {"no_mask_file": 0, "lesion_outside_crop": 0, "truncated": 0}
    masks, rows, lesions = {}, [], []
    for s, (r, j) in enumerate(zip(enc["sentence_to_report"].tolist(), enc["sentence_index"].tolist())):
        item = ctx.items[r]
        ids = item["sentences"][j].get("lesion_ids") or []
        if not ids:
            continue
        if r not in masks:
            path = lesion_mask_path(run_dir, item["volume_id"])
            shape = nib.load(item["path"]).shape                       # header only: same grid as the image?
            masks[r] = load_mask_crop(path, encoder.img_size, shape) if path.exists() else None
        if masks[r] is None:
            skipped["no_mask_file"] += 1
            continue
        patches = lesion_patches(masks[r], ids, encoder.patch_size)
        if not bool(patches.any()):
            skipped["lesion_outside_crop"] += 1
            continue
        rows.append({"sentence": s, "volume": r, "lesion_ids": list(ids), "text": item["sentences"][j]["text"]})
        lesions.append(patches)
    lesion = torch.stack(lesions) if lesions else torch.zeros(0, ctx.patches.shape[1], dtype=torch.bool)
    skipped["truncated"] = named - len(rows) - skipped["no_mask_file"] - skipped["lesion_outside_crop"]
    return rows, lesion, skipped


def heatmap_for(model, patches: torch.Tensor, sentence: torch.Tensor, volume_path, text: str, out_png,
                mask_path=None, lesion_ids: Sequence[int] | None = None, k: int = 8, title: str = "",
                pad_mode: str = "reflect") -> Path:
    """One figure: sentence (D,) against one volume's patches (N, D), over its centre crop."""
    encoder = model.encoder
    sims = patches.float() @ sentence.float()                                          # (N,)
    volume = load_crop(volume_path, encoder.img_size, pad_mode)[0].numpy()
    lesion = None
    if mask_path is not None and Path(mask_path).exists():
        mask = load_mask_crop(mask_path, encoder.img_size)
        lesion = (torch.isin(mask, torch.as_tensor(list(lesion_ids))) if lesion_ids else mask > 0).numpy()
    top = torch.topk(sims, min(k, sims.numel())).indices.numpy()
    return heatmap_figure(volume, text, sims.reshape(encoder.grid_size).numpy(), out_png, lesion, title,
                          top_patches=top)


def heatmap_for_text(model, volume_path, text: str, out_png, mask_path=None, lesion_ids=None, k: int = 8,
                     pad_mode: str = "reflect", max_tokens: int = 256) -> Path:
    """Heat map of any sentence over any preprocessed volume (real or synthetic); the sentence is read on
    its own, not in the context of a report. Centre crop only; for a raw NIfTI/DICOM input, the whole
    volume (tiled) and a NIfTI heat map on the input's grid see `simcrop.evaluate.volume_heatmap`
    (`simcrop heatmap`)."""
    patches = encode_volumes(model, [volume_path], pad_mode=pad_mode, progress=False)[0]
    if patches.shape[0] == 1:
        raise NotApplicableError("a global-feature model (CLIP baseline) has no per-patch similarity to draw")
    sentence = encode_sentences(model, [text], max_tokens=max_tokens)[0]
    return heatmap_for(model, patches, sentence, volume_path, text, out_png, mask_path, lesion_ids, k,
                       Path(volume_path).name.split(".")[0], pad_mode)


def evaluate_grounding(cfg, checkpoint, run_dir, out_json, *, split: str = "test", topk: int | None = None,
                       n_figures: int = 4, figures_dir=None, text_max_tokens: int | None = None,
                       batch_size: int = 2, cache_dir=None, device: str = "cpu", progress: bool = True,
                       text_encoder=None) -> dict:
    """Hit fraction and pointing game of lesion sentences vs chance over `split`; writes `out_json` and
    up to `n_figures` heat maps (one per scan) to figures_dir (default: `<out_json stem>_figures/`).

    text_max_tokens: report tokens read (default: the checkpoint's, as in training); lesion sentences cut
    off by it are counted in `skipped_sentences.truncated`.

    Raises NotApplicableError for models without patch features (MAE, CLIP baseline).
    """
    ctx = load_context(checkpoint, device, text_encoder)
    if ctx.kind != "patch":
        raise NotApplicableError(f"objective {ctx.model_cfg.model.objective!r} has no patch-sentence "
                                 "similarity: grounding needs SimCroP's patch features")
    items = report_items(run_dir, split, ctx.model_cfg.model.img_size)
    # synthetic lesions: only volumes that have a lesion sentence and a mask need features
    named = [it for it in items if any(s.get("lesion_ids") for s in it["sentences"])
             and lesion_mask_path(run_dir, it["volume_id"]).exists()]
    real = not named
    if real:                                   # heat maps only: the first volume of the first scans
        per_scan = {}
        for it in items:
            per_scan.setdefault(it["scan_id"], it)
        named = list(per_scan.values())[:max(n_figures, 1)]
    add_features(ctx, checkpoint, run_dir, named, topk, cache_dir, batch_size, progress)
    enc = encode_reports(ctx.model, ctx.items, max_tokens=text_max_tokens or ctx.model_cfg.model.text_max_tokens,
                         progress=progress)
    rows, lesion, skipped = _grounding_sentences(ctx, run_dir, enc)
    if not real:                               # lesion sentences of volumes left out for want of a mask
        kept = {it["volume_id"] for it in named}
        skipped["no_mask_file"] += sum(1 for it in items if it["volume_id"] not in kept
                                       for rec in it["sentences"] if rec.get("lesion_ids"))
    if rows:
        s_idx = torch.tensor([row["sentence"] for row in rows])
        s2v = torch.tensor([row["volume"] for row in rows])
        res = topk_similarity(enc["features"][s_idx].to(device), ctx.patches.to(device), ctx.k, mode="own",
                              sentence_to_volume=s2v.to(device), return_pooled=False)
        summary = summarize(grounding_scores(res.indices.cpu(), lesion))
    else:
        summary = summarize({key: torch.zeros(0) for key in ("hit", "pointing", "chance", "oracle",
                                                             "lesion_patches")})
    out_json = Path(out_json)
    figures_dir = Path(figures_dir) if figures_dir else out_json.with_name(out_json.stem + "_figures")
    figures = _figures(ctx, run_dir, enc, rows, n_figures, figures_dir)
    metrics = {"task": "grounding", "applicable": not real, "split": split, **ctx.info, **summary,
               "skipped_sentences": skipped, "figures": [str(p) for p in figures]}
    if real:
        metrics["reason"] = "no Findings sentence names a lesion with a mask (real data): heat maps only"
    write_json_atomic(Path(out_json), json_safe(metrics))
    log.info("grounding %s: %d sentences, hit fraction %.3f (chance %.3f), pointing %.3f (chance %.3f)", split,
             summary["n_sentences"], summary["hit_fraction"], summary["hit_fraction_chance"],
             summary["pointing_game"], summary["pointing_chance"])
    return metrics


def _figures(ctx, run_dir, enc, rows, n_figures: int, out_dir: Path) -> list[Path]:
    """Heat maps of the first lesion sentences, one per scan; without any, the first Findings sentence
    of the first volumes."""
    if not rows:
        first = {}
        for s, r in enumerate(enc["sentence_to_report"].tolist()):
            first.setdefault(r, {"sentence": s, "volume": r, "lesion_ids": None,
                                 "text": ctx.items[r]["sentences"][int(enc["sentence_index"][s])]["text"]})
        rows = list(first.values())
    chosen, scans = [], set()
    for row in rows:
        scan = ctx.items[row["volume"]]["scan_id"]
        if scan not in scans and len(chosen) < n_figures:
            scans.add(scan)
            chosen.append(row)
    out = []
    for row in chosen:
        item = ctx.items[row["volume"]]
        png = out_dir / f"{item['volume_id']}_s{int(enc['sentence_index'][row['sentence']])}.png"
        out.append(heatmap_for(ctx.model, ctx.patches[row["volume"]], enc["features"][row["sentence"]],
                               item["path"], row["text"], png, lesion_mask_path(run_dir, item["volume_id"]),
                               row["lesion_ids"], ctx.k, item["volume_id"], ctx.model_cfg.pretrain.pad_mode))
    return out
