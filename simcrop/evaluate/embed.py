"""Features of a pre-trained model for zero-shot, retrieval and grounding: patches and sentences in the
shared space, L2-normalised, computed the way training computes them (method.md §3) but unmasked.

    volume path ──load_preprocessed──► centre crop (the dataset's eval chain) ──► ViT (all N patches)
                 ──► patch head ──► normalise                                   (V, N, D)
    report ──ReportBatcher──► frozen text encoder ──► token head ──► mean per sentence ──► normalise
                                                                                             (Ns, D)

The CLIP baseline has no patch or sentence features: it gets one global feature per volume (N = 1,
head(mean of patch tokens)) and one per text (head(mean of its tokens)); with N = K = 1 the top-K score
is the CLIP cosine, so zero-shot and retrieval run unchanged. Grounding needs patches: not applicable.
The MAE baseline has no text side: `NotApplicableError` for every task here.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import CenterSpatialCrop, Compose
from torch import nn
from tqdm import tqdm

from simcrop.config import Config, ModelConfig, from_dict
from simcrop.data.transforms import PadTo, after_crop, apply, crop_box, eval_transform
from simcrop.data.preprocessed_io import DEFAULT_HU_WINDOW, load_preprocessed, open_preprocessed, read_preprocessed
from simcrop.evaluate import feature_cache
from simcrop.model.alignment import sentence_features
from simcrop.model.factory import build_collate, build_pretrain_model
from simcrop.model.weights import load_model_state, read_checkpoint

log = logging.getLogger(__name__)


class NotApplicableError(ValueError):
    """The model has no feature this task needs (e.g. the MAE baseline has no text side)."""


def load_model(checkpoint, device: str | torch.device = "cpu", text_encoder=None) -> tuple[nn.Module, Config]:
    """Pre-training checkpoint → (model built from its saved config, in eval mode on device; that Config).

    text_encoder: reuse an already loaded FrozenTextEncoder (tests); otherwise loaded from the config.
    """
    ckpt = read_checkpoint(checkpoint)
    cfg = from_dict(ckpt.get("config") or {})
    model = build_pretrain_model(cfg.model, text_encoder=text_encoder)
    load_model_state(model, ckpt["model"], str(checkpoint))
    return model.to(device).eval(), cfg


def feature_kind(model: nn.Module) -> str:
    """'patch' (SimCroP: patch and token heads), 'global' (CLIP baseline), else NotApplicableError."""
    if hasattr(model, "patch_head") and hasattr(model, "token_head"):
        return "patch"
    if hasattr(model, "image_head") and hasattr(model, "text_head"):
        return "global"
    raise NotApplicableError(f"{type(model).__name__} has no image-text alignment heads (an MAE-only model, or "
                             "SimCroP trained with loss_weights.align = 0): no shared patch-sentence space")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def load_crop(path, crop: Sequence[int], pad_mode: str = "reflect",
              hu_window: Sequence[float] = DEFAULT_HU_WINDOW) -> torch.Tensor:
    """Preprocessed volume → centre crop (1, *crop) float32 in [-1, 1], the dataset's eval path (only the
    crop's box is read)."""
    chain, stored = eval_transform(crop, pad_mode), open_preprocessed(path)
    return after_crop(chain, load_preprocessed(stored, hu_window, crop_box(chain, stored.shape)))


def load_mask_crop(path, crop: Sequence[int], image_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Label map on the volume's grid → (*crop) int64, padded with 0 and centre-cropped like the image.

    The pad is symmetric whatever the mode, so padding labels with background keeps them aligned with the
    (reflect-padded) image; mirrored lesion copies in the pad do not count as lesion.
    """
    mask = read_preprocessed(path)
    if image_shape is not None and tuple(mask.shape) != tuple(image_shape):
        raise ValueError(f"{path}: mask shape {mask.shape} differs from its volume's {tuple(image_shape)}")
    x = torch.from_numpy(np.ascontiguousarray(mask).astype(np.float32))[None]
    crop = tuple(int(c) for c in crop)
    chain = Compose([PadTo(crop, "constant", 0.0), CenterSpatialCrop(crop)])   # eval_transform's geometry
    return apply(chain, x).round().long()[0]


def selection_features(model: nn.Module, patches: torch.Tensor) -> torch.Tensor:
    """What the model's top-K choice is made on, for (V, N, D) patch features of whole crops: the features
    themselves, or (model.topk_selection: position_centred) the features minus their grid position's
    running mean from training, as in pre-training (`simcrop.model.simcrop.SimCroP._selection`)."""
    mean = getattr(model, "position_mean", None)
    if getattr(model, "topk_selection", "features") != "position_centred" or mean is None:
        return patches
    return patches - mean.to(device=patches.device, dtype=patches.dtype)


@torch.no_grad()
def patch_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """images (B, 1, X, Y, Z) in [-1, 1] → (B, N, D) normalised ('global' models: N = 1)."""
    encoder = model.encoder
    tokens = encoder.forward_features(images.to(_device(model)))[:, 1:]       # (B, N, C), no masking
    if feature_kind(model) == "patch":
        return F.normalize(model.patch_head(tokens).float(), dim=-1)
    return F.normalize(model.image_head(tokens.mean(dim=1)).float(), dim=-1)[:, None]


def encode_volumes(model: nn.Module, paths: Sequence, crop: Sequence[int] | None = None, batch_size: int = 2,
                   pad_mode: str = "reflect", progress: bool = True,
                   hu_window: Sequence[float] = DEFAULT_HU_WINDOW) -> torch.Tensor:
    """Volume files → (V, N, D) float32 CPU patch features, normalised, centre crop (default: model img_size);
    HU scaled by `hu_window` (the checkpoint's preprocess.hu_window)."""
    feature_kind(model)
    crop = tuple(crop or model.encoder.img_size)
    out = []
    for start in tqdm(range(0, len(paths), batch_size), desc="encode volumes", unit="batch", disable=not progress):
        images = torch.stack([load_crop(p, crop, pad_mode, hu_window) for p in paths[start:start + batch_size]])
        out.append(patch_features(model, images).cpu())
    if not out:
        raise ValueError("encode_volumes got no volume")
    return torch.cat(out)


def _as_report(report) -> dict:
    """A report dict {"findings", "impressions", "sentences"} or a list of sentence strings (joined by spaces)."""
    if isinstance(report, dict):
        sentences = [s for s in report["sentences"] if s.get("section", "findings") == "findings"]
        return {"findings": report["findings"], "impressions": report.get("impressions", ""), "sentences": sentences}
    text, records = "", []
    for sentence in report:
        start = len(text) + (1 if text else 0)
        text = f"{text} {sentence}" if text else str(sentence)
        records.append({"section": "findings", "text": sentence, "start": start, "end": len(text)})
    return {"findings": text, "impressions": "", "sentences": records}


@torch.no_grad()
def _sentence_batch(model: nn.Module, collate, reports: list[dict]) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Training's sentence features for a few reports: (Ns, D), sentence_to_report (Ns,), kept indices."""
    # lesion_ids carries each record's index through the batcher, which drops fully truncated sentences
    samples = [{"image": torch.zeros(1), "volume_id": f"report{i}", "findings": r["findings"],
                "impressions": r["impressions"],
                "sentences": [dict(s, lesion_ids=[j]) for j, s in enumerate(r["sentences"])]}
               for i, r in enumerate(reports)]
    batch = collate(samples)
    device = _device(model)
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    if feature_kind(model) == "global":
        feats = model.text_features(ids, mask, batch["findings_mask"].to(device))       # (B, D)
        return F.normalize(feats.float(), dim=-1), torch.arange(len(reports)), [[-1] for _ in reports]
    tokens = model.text_encoder(ids, mask)                                               # (B, L, H)
    feats, s2r = sentence_features(model.token_head(tokens), batch["token_sentence"].to(device))
    kept = [[ids_[0] for ids_ in per] for per in batch["sentence_lesions"]]
    return F.normalize(feats.float(), dim=-1), s2r, kept


def encode_reports(model: nn.Module, reports: Sequence, batch_size: int = 8, max_tokens: int = 256,
                   progress: bool = True) -> dict:
    """Reports → sentence features, each sentence read in the context of its whole report (as in training).

    reports: dicts {"findings", "impressions", "sentences": [{"section", "start", "end", ...}]} (offsets
    into findings; only findings sentences count) or lists of sentence strings.
    Returns {"features": (Ns, D) float32 CPU normalised, "sentence_to_report": (Ns,) int64,
    "sentence_index": (Ns,) int64 index into the report's findings sentences (-1 for 'global' models,
    whose one feature per report covers all of its findings)}.
    """
    feature_kind(model)
    collate = build_collate(ModelConfig(text_max_tokens=int(max_tokens)), tokenizer=model.text_encoder.tokenizer)
    reports = [_as_report(r) for r in reports]
    feats, s2r, index = [], [], []
    for start in tqdm(range(0, len(reports), batch_size), desc="encode reports", unit="batch",
                      disable=not progress):
        f, s, kept = _sentence_batch(model, collate, reports[start:start + batch_size])
        feats.append(f.cpu())
        s2r.append(s.cpu() + start)
        index += [j for per in kept for j in per]
    return {"features": torch.cat(feats), "sentence_to_report": torch.cat(s2r).long(),
            "sentence_index": torch.tensor(index, dtype=torch.long)}


def encode_sentences(model: nn.Module, texts: Sequence[str], batch_size: int = 32,
                     max_tokens: int = 256) -> torch.Tensor:
    """Free-standing sentences (prompts) → (Ns, D) float32 normalised; each one is its own one-sentence report."""
    texts = [str(t).strip() for t in texts]
    if not all(texts):
        raise ValueError("encode_sentences got an empty text")
    return encode_reports(model, [[t] for t in texts], batch_size, max_tokens, progress=False)["features"]


def cached_volume_features(model: nn.Module, checkpoint, paths: Sequence, cache_dir=None,
                           crop: Sequence[int] | None = None, batch_size: int = 2, pad_mode: str = "reflect",
                           progress: bool = True, hu_window: Sequence[float] = DEFAULT_HU_WINDOW) -> torch.Tensor:
    """`encode_volumes`, read from / written to `<cache_dir>/volumes-<key>.pt` (`simcrop.evaluate.feature_cache`).

    The key hashes the checkpoint's path, size and mtime, the volume list, the crop and the pad mode,
    so a retrained checkpoint or another split never reads stale features. cache_dir None: no cache.
    """
    crop = tuple(int(c) for c in (crop or model.encoder.img_size))
    paths = [str(p) for p in paths]
    if cache_dir is None:
        return encode_volumes(model, paths, crop, batch_size, pad_mode, progress, hu_window)
    window = [float(v) for v in hu_window]
    # the window joins the key only when it is not the default, so existing caches stay valid
    extra = {} if tuple(window) == tuple(DEFAULT_HU_WINDOW) else {"hu_window": window}
    name = feature_cache.key(**feature_cache.file_stamp(checkpoint), paths=paths, crop=crop, pad_mode=pad_mode,
                             **extra)
    path = Path(cache_dir) / f"volumes-{name}.pt"
    features = feature_cache.load(path, paths, crop=crop)
    if features is None:
        features = encode_volumes(model, paths, crop, batch_size, pad_mode, progress, hu_window)
        feature_cache.save(path, paths, features, crop=crop)
    return features
