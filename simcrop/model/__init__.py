"""Models: the 3D ViT encoder, masked image modelling, SimCroP's alignment, fusion and text decoder."""
from simcrop.model.alignment import sentence_features, similarity_alignment_loss
from simcrop.model.baselines import ClipPretrain, MAEPretrain, clip_loss
from simcrop.model.fusion import FusionLayer
from simcrop.model.mae import MAEDecoder, MaskedAutoencoder3D, build_mae, random_masking
from simcrop.model.pos_embed import POS_EMBED_KINDS, build_pos_embed
from simcrop.model.projection import ProjectionHead
from simcrop.model.simcrop import OBJECTIVES, SimCroP, build_collate, build_pretrain_model
from simcrop.model.text_decoder import TextDecoder, mlm_loss
from simcrop.model.vit3d import VIT_CONFIGS, PatchEmbed3D, VisionTransformer3D, build_vit, check_input

__all__ = [
    "sentence_features", "similarity_alignment_loss", "ClipPretrain", "MAEPretrain", "clip_loss", "FusionLayer",
    "ProjectionHead", "OBJECTIVES", "SimCroP", "build_collate", "build_pretrain_model", "TextDecoder", "mlm_loss",
    "MAEDecoder", "MaskedAutoencoder3D", "build_mae", "random_masking",
    "POS_EMBED_KINDS", "build_pos_embed",
    "VIT_CONFIGS", "PatchEmbed3D", "VisionTransformer3D", "build_vit", "check_input",
]
