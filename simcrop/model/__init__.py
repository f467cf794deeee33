"""Models: the 3D ViT encoder, masked image modelling, SimCroP's alignment, fusion and text decoder.

Names below load on first use (PEP 562), so `simcrop.model.objectives` stays importable without torch:
the config and the variants check allowed values against it.
"""
from __future__ import annotations

import importlib

_WHERE = {
    "sentence_features": "alignment", "similarity_alignment_loss": "alignment",
    "ClipPretrain": "baselines", "MAEPretrain": "baselines", "SupervisedPretrain": "baselines",
    "clip_loss": "baselines",
    "build_collate": "factory", "build_pretrain_model": "factory",
    "FusionLayer": "fusion",
    "MAEDecoder": "mae", "MaskedAutoencoder3D": "mae", "build_mae": "mae", "random_masking": "mae",
    "OBJECTIVES": "objectives", "POS_EMBED_KINDS": "objectives",
    "build_pos_embed": "pos_embed",
    "ProjectionHead": "projection",
    "SimCroP": "simcrop",
    "TextDecoder": "text_decoder", "mlm_loss": "text_decoder",
    "VIT_CONFIGS": "vit3d", "PatchEmbed3D": "vit3d", "VisionTransformer3D": "vit3d", "build_vit": "vit3d",
    "check_input": "vit3d",
}
__all__ = list(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value            # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
