"""The model's allowed values, torch-free: the config (schema test), the variants and the models import them.

This is the one list of each; `config/schema.yaml` repeats them as enums (Snakemake validates with the
YAML alone) and tests/test_config.py fails when the two disagree.
"""
from __future__ import annotations

OBJECTIVES = ("simcrop", "simcrop_batchneg", "mae", "clip", "supervised")   # what `build_pretrain_model` builds
LOSS_NAMES = ("image", "align", "report")              # SimCroP's terms (model.loss_weights keys)
NEGATIVES = ("report", "batch", "both")                # alignment negatives: same report | batch | sum of both
TOPK_SELECTIONS = ("features", "position_centred")     # what the top-K choice is made on
MLM_LOSS_ON = ("masked", "all")                        # report reconstruction loss positions
POS_EMBED_KINDS = ("3d_sincos", "2d_legacy")           # ViT position tables (simcrop.model.pos_embed)
