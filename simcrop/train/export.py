"""Encoder weights out, under the official (timm) key names.

`export_encoder` turns a training checkpoint into `{"model": encoder state_dict, "step", "config"}`
whose keys are the official ViT backbone names: `cls_token`, `pos_embed`, `patch_embed.proj.*`,
`blocks.N.*`, `norm.*` (what our `VisionTransformer3D` loads strictly; the official downstream models
load it non-strictly). Finding the encoder inside the training model and reading weights back
(`load_encoder_init`, `--init`) live in `simcrop.model.weights`: evaluation reads them too.
"""
from __future__ import annotations

import logging
from pathlib import Path

from simcrop.model.weights import encoder_state, read_checkpoint
from simcrop.train.checkpoint import save_torch

log = logging.getLogger(__name__)


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
