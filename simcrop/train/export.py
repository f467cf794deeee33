"""Encoder weights in and out, under the official (timm) key names.

`export_encoder` turns a training checkpoint into `{"model": encoder state_dict, "step", "config"}`
whose keys are exactly what the official `vit_base_patch16` (and our `VisionTransformer3D`) expect:
`cls_token`, `pos_embed`, `patch_embed.proj.*`, `blocks.N.*`, `norm.*`. The encoder's prefix inside
the training model (`encoder.`, `mae.encoder.`, `module.encoder.`, ...) is found from the keys, not assumed.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from simcrop.train.checkpoint import read_checkpoint, save_torch

log = logging.getLogger(__name__)
ANCHOR = "patch_embed.proj.weight"
IGNORED_INIT_PREFIXES = ("head.", "fc_norm.")   # classifier heads of official fine-tuned weights


def encoder_prefix(state: dict) -> str:
    """The prefix under which a ViT encoder sits in `state` ('' for a bare encoder state dict).

    A prefix qualifies when it holds `patch_embed.proj.weight`, `cls_token` and `blocks.0.attn.qkv.weight`;
    an image decoder has none of these. Prefers a prefix ending in `encoder.`; raises if none or several.
    """
    found = []
    for key in state:
        if key.endswith(ANCHOR):
            prefix = key[: -len(ANCHOR)]
            if f"{prefix}cls_token" in state and f"{prefix}blocks.0.attn.qkv.weight" in state:
                found.append(prefix)
    if not found:
        raise ValueError(f"no ViT encoder in the state dict (no '*{ANCHOR}' with cls_token and blocks.0)")
    if len(found) > 1:
        named = [p for p in found if p.endswith("encoder.")]
        if len(named) != 1:
            raise ValueError(f"several ViT encoders in the state dict: prefixes {found}")
        found = named
    return found[0]


def encoder_state(state: dict) -> dict:
    """The encoder's entries of a model state dict, prefix stripped."""
    prefix = encoder_prefix(state)
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def export_encoder(checkpoint_path, out_path) -> Path:
    """Write `{"model": encoder state_dict (official names), "step", "config"}` atomically to out_path."""
    ckpt = read_checkpoint(checkpoint_path)
    state = encoder_state(ckpt["model"])
    payload = {"model": {k: v.clone() for k, v in state.items()}, "step": ckpt.get("step", 0),
               "config": ckpt.get("config", {})}
    out_path = Path(out_path)
    save_torch(payload, out_path)
    log.info("exported %d encoder tensors from %s (step %s) to %s", len(state), checkpoint_path,
             payload["step"], out_path)
    return out_path


def load_encoder_init(encoder: nn.Module, path) -> list[str]:
    """Load `{"model": state_dict}` (official key names; a full training checkpoint works too) into
    `encoder` strictly: every ViT key must be present with the same shape, and nothing else may be
    left over except classifier heads (`head.*`, `fc_norm.*`), which are dropped and returned."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt["model"] if isinstance(ckpt, dict) and "model" in ckpt else ckpt
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict or {{'model': state dict}}")
    if "cls_token" not in state:                     # a training checkpoint: find the encoder inside
        state = encoder_state(state)
    ignored = sorted(k for k in state if k.startswith(IGNORED_INIT_PREFIXES))
    state = {k: v for k, v in state.items() if k not in ignored}
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: encoder weights do not match the model (strict): {err}") from err
    if ignored:
        log.info("init %s: ignored classifier keys %s", path, ignored)
    return ignored
