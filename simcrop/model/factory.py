"""Build any objective's pre-training module, and its collate function, from a ModelConfig.

The one place that maps `model.objective` (simcrop.model.objectives.OBJECTIVES) to a module, so the
models (simcrop.py, baselines.py) import nothing of each other. Every module exposes `.encoder` and
`forward(batch) -> {"loss", "losses"}`; the trainer, the evaluations and the benchmarks call these.
"""
from __future__ import annotations

from torch import nn

from simcrop.config import ModelConfig
from simcrop.model.baselines import ClipPretrain, MAEPretrain, SupervisedPretrain
from simcrop.model.mae import build_mae
from simcrop.model.objectives import LOSS_NAMES, OBJECTIVES
from simcrop.model.simcrop import SimCroP
from simcrop.model.vit3d import build_vit
from simcrop.text.batch import ReportBatcher
from simcrop.text.encoder import FrozenTextEncoder


def loss_weights(model_cfg: ModelConfig) -> dict[str, float]:
    """Weights per loss name; unknown names raise, missing ones default to 1."""
    given = dict(model_cfg.loss_weights or {})
    unknown = sorted(set(given) - set(LOSS_NAMES))
    if unknown:
        raise ValueError(f"model.loss_weights: unknown loss name(s) {unknown}; allowed: {list(LOSS_NAMES)}")
    weights = {name: float(given.get(name, 1.0)) for name in LOSS_NAMES}
    if any(w < 0 for w in weights.values()):
        raise ValueError(f"model.loss_weights must be >= 0; got {weights}")
    return weights


def build_text_encoder(model_cfg: ModelConfig) -> FrozenTextEncoder:
    return FrozenTextEncoder(model_cfg.text_encoder)


def build_pretrain_model(model_cfg: ModelConfig, text_encoder: FrozenTextEncoder | None = None) -> nn.Module:
    """The pre-training module for `model_cfg.objective`. text_encoder: reuse an already loaded one (tests)."""
    if model_cfg.objective not in OBJECTIVES:
        raise ValueError(f"model.objective must be one of {OBJECTIVES}; got {model_cfg.objective!r}")
    encoder = build_vit(model_cfg.vit, img_size=tuple(model_cfg.img_size), patch_size=tuple(model_cfg.patch_size),
                        pos_embed=model_cfg.pos_embed)
    if model_cfg.objective == "supervised":         # the probe's upper bound: the 18 labels, no text side
        return SupervisedPretrain(encoder)
    if model_cfg.objective == "clip":
        return ClipPretrain(encoder, text_encoder or build_text_encoder(model_cfg), model_cfg.proj_dim,
                            model_cfg.temperature, model_cfg.mask_ratio)
    mae = build_mae(encoder, model_cfg.decoder_dim, model_cfg.decoder_depth, model_cfg.decoder_heads,
                    model_cfg.mask_ratio, model_cfg.norm_pix_loss)
    if model_cfg.objective == "mae":
        return MAEPretrain(mae)
    weights = loss_weights(model_cfg)
    negatives = "batch" if model_cfg.objective == "simcrop_batchneg" else model_cfg.negatives
    return SimCroP(mae, text_encoder or build_text_encoder(model_cfg), model_cfg.proj_dim, model_cfg.topk,
                   model_cfg.temperature, negatives, model_cfg.mlm_loss_on, model_cfg.text_decoder_layers,
                   model_cfg.text_decoder_heads, weights, topk_selection=model_cfg.topk_selection,
                   position_momentum=model_cfg.position_momentum, same_text_cos=model_cfg.same_text_cos)


def build_collate(model_cfg: ModelConfig, tokenizer=None, seed: int = 0, bert_mix: bool = False) -> ReportBatcher:
    """The DataLoader collate_fn for every objective (the MAE baseline ignores the text fields).

    tokenizer: reuse one (e.g. `model.text_encoder.tokenizer`); otherwise loaded from model_cfg.text_encoder.
    """
    if tokenizer is None:
        from simcrop.text.encoder import load_tokenizer

        tokenizer = load_tokenizer(model_cfg.text_encoder)
    return ReportBatcher(tokenizer, model_cfg.text_max_tokens, model_cfg.text_mask_prob, seed=seed,
                         bert_mix=bert_mix)
