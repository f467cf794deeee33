"""Probe features of a frozen encoder (views "tiles" and "center"; see `simcrop.evaluate.probe`), cached
per encoder and view with `simcrop.evaluate.feature_cache`.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Mapping, Sequence

import torch
from tqdm import tqdm

from simcrop.data.transforms import apply, eval_transform
from simcrop.data.preprocessed_io import DEFAULT_HU_WINDOW, load_preprocessed
from simcrop.evaluate import feature_cache
from simcrop.evaluate.tiling import tile_batches, tiling
from simcrop.model.vit3d import VisionTransformer3D, build_vit
from simcrop.model.weights import load_encoder_init

log = logging.getLogger(__name__)
VIEWS = ("tiles", "center")
PAD_MODE = "constant"          # air padding, for the centre crop and the tiles alike


def build_encoder(model_cfg, img_size: Sequence[int] | None = None, encoder_path=None,
                  vit_overrides: dict | None = None, seed: int = 0) -> VisionTransformer3D:
    """A ViT of `model_cfg`'s architecture for crops of `img_size` (default model_cfg.img_size).

    encoder_path None is the "random init" row (seeded). Otherwise weights load strictly into a ViT of
    the pre-training crop size; for another crop size everything but `pos_embed` is copied over (a fixed
    sin-cos table over integer grid coordinates, rebuilt for the new grid). `vit_overrides` (embed_dim,
    depth, num_heads, ...) go to `build_vit` on top of the `model_cfg.vit` preset.
    """
    pre_size = tuple(int(s) for s in model_cfg.img_size)
    img_size = tuple(int(s) for s in (img_size or pre_size))

    def make(size):
        torch.manual_seed(seed)
        return build_vit(model_cfg.vit, img_size=size, patch_size=tuple(model_cfg.patch_size),
                         pos_embed=model_cfg.pos_embed, **(vit_overrides or {}))

    encoder = make(img_size)
    if encoder_path is None:
        return encoder
    source = encoder if img_size == pre_size else make(pre_size)
    load_encoder_init(source, encoder_path)
    if source is not encoder:
        state = {k: v for k, v in source.state_dict().items() if k != "pos_embed"}
        missing, unexpected = encoder.load_state_dict(state, strict=False)
        if list(missing) != ["pos_embed"] or unexpected:
            raise ValueError(f"{encoder_path}: weights do not fit a {img_size} crop ({missing}, {unexpected})")
    return encoder


@torch.no_grad()
def patch_tokens(encoder: VisionTransformer3D, x: torch.Tensor) -> torch.Tensor:
    """x (B, 1, H, W, D) scaled HU -> (B, N, C): the last block's patch tokens (no CLS, no final norm)."""
    _, hidden = encoder.forward_features(x, return_hidden=True)
    return hidden[-1][:, 1:].float()


@torch.no_grad()
def pooled_features(encoder: VisionTransformer3D, x: torch.Tensor) -> torch.Tensor:
    """x (B, 1, H, W, D) scaled HU -> (B, C): mean of the last block's patch tokens (no CLS, no final norm)."""
    return patch_tokens(encoder, x).mean(dim=1)


@torch.no_grad()
def tiled_features(encoder: VisionTransformer3D, image: torch.Tensor, batch_size: int = 4,
                   pad_mode: str = PAD_MODE) -> torch.Tensor:
    """image (X, Y, Z) scaled HU, any size -> (C,): the whole-volume feature of view "tiles" (module
    docstring): per lattice cell the mean token over the tiles holding it, averaged over the cells
    weighted by their share of voxels inside the volume."""
    layout = tiling(image.shape, encoder.img_size, encoder.patch_size)
    inside = layout.inside_fraction()
    weights = torch.from_numpy(inside / layout.coverage() / inside.sum()).float()       # (*cells)
    device = next(encoder.parameters()).device
    grid = encoder.grid_size
    total = torch.zeros(encoder.embed_dim, dtype=torch.float64)
    for corners, tiles in tile_batches(image, layout, pad_mode, batch_size):
        tokens = patch_tokens(encoder, tiles.to(device)).cpu()                          # (B, N, C)
        w = torch.stack([weights[layout.cell_slices(c, grid)].reshape(-1) for c in corners])   # (B, N)
        total += torch.einsum("bn,bnc->c", w, tokens).double()
    return total.float()


def extract_features(encoder: VisionTransformer3D, volumes: Mapping[str, str], crop: Sequence[int] | None = None,
                     batch_size: int = 4, cache_path=None, progress: bool = True,
                     view: str = "center",
                     hu_window: Sequence[float] = DEFAULT_HU_WINDOW) -> tuple[list[str], torch.Tensor]:
    """Features of every volume {volume_id: preprocessed NIfTI path} -> (ids, (N, C) float32).

    view "center": centre crop of `crop` (default encoder.img_size); "tiles": the whole volume in tiles of
    the encoder's crop (`tiled_features`; `crop` must then be the encoder's). No masking, eval mode. With
    `cache_path`, a cache of this crop and view holding every requested id is reused; otherwise all are
    computed and the cache is (re)written atomically (`feature_cache`, meta crop and view). The cache
    must be specific to one encoder (`encoder_tag` names it). HU are scaled by `hu_window`.
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}; got {view!r}")
    crop = tuple(int(s) for s in (crop or encoder.img_size))
    if view == "tiles" and crop != tuple(encoder.img_size):
        raise ValueError(f"view 'tiles' uses the encoder's crop {tuple(encoder.img_size)}, not {crop}")
    ids = list(volumes)
    if cache_path is not None:
        cached = feature_cache.load(cache_path, ids, crop=crop, view=view)
        if cached is not None:
            return ids, cached
    encoder.eval()
    device = next(encoder.parameters()).device
    feats = []
    if view == "tiles":
        for v in tqdm(ids, desc="probe features (tiles)", disable=not progress):
            feats.append(tiled_features(encoder, load_preprocessed(volumes[v], hu_window)[0], batch_size)[None])
    else:
        transform = eval_transform(crop, pad_mode=PAD_MODE)
        for start in tqdm(range(0, len(ids), batch_size), desc="probe features", disable=not progress):
            batch = torch.stack([apply(transform, load_preprocessed(volumes[v], hu_window)) for v in ids[start:start + batch_size]])
            feats.append(pooled_features(encoder, batch.to(device)).cpu())
    features = torch.cat(feats) if feats else torch.zeros(0, encoder.embed_dim)
    if cache_path is not None:
        feature_cache.save(cache_path, ids, features, crop=crop, view=view)
    return ids, features


def encoder_tag(encoder_path, seed: int, model_cfg=None, vit_overrides: dict | None = None) -> str:
    """Cache key: `<encoder folder>-<hash of the file's bytes>`, or `random-<hash of architecture and seed>`."""
    if encoder_path is None:
        arch = [getattr(model_cfg, k, None) for k in ("vit", "img_size", "patch_size", "pos_embed")]
        text = json.dumps([arch, vit_overrides or {}, seed], sort_keys=True, default=str)
        return f"random-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    return f"{Path(encoder_path).parent.name}-{feature_cache.file_digest(encoder_path)}"
