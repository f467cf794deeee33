"""Models: the 3D ViT encoder, masked image modelling, and (later) SimCroP's alignment and fusion."""
from simcrop.model.mae import MAEDecoder, MaskedAutoencoder3D, build_mae, random_masking
from simcrop.model.pos_embed import POS_EMBED_KINDS, build_pos_embed
from simcrop.model.vit3d import VIT_CONFIGS, PatchEmbed3D, VisionTransformer3D, build_vit, check_input

__all__ = [
    "MAEDecoder", "MaskedAutoencoder3D", "build_mae", "random_masking",
    "POS_EMBED_KINDS", "build_pos_embed",
    "VIT_CONFIGS", "PatchEmbed3D", "VisionTransformer3D", "build_vit", "check_input",
]
