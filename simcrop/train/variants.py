"""The pre-trained rows of an experiment: built-in objectives and named variants of them.

A variant is a row of the results table trained with one objective and some settings changed, e.g. an
ablation (`model.loss_weights.align: 0`), a second seed, or SimCroP started from the MAE row's encoder:

    experiment:
      objectives: [random, mae, simcrop, simcrop_from_mae]
      variants:
        simcrop_from_mae: {objective: simcrop, init_from: mae, pretrain: {steps: 300}}

Its `model` and `pretrain` settings are the run's, with the variant's deep-merged over them, so one
change to the base config reaches every row. `init_from` names another pre-trained row whose exported
encoder starts this one (Snakemake trains that row first). Rows are folders: <run_dir>/pretrain/<name>/.
"""
from __future__ import annotations

import re

from simcrop.config import Config, ConfigError, ModelConfig, PretrainConfig, _build, deep_merge
from simcrop.layout import RANDOM, run_of
from simcrop.model.objectives import OBJECTIVES      # torch-free: loading a config imports this module

NAME = re.compile(r"^[A-Za-z0-9_]+$")
VARIANT_KEYS = ("objective", "init_from", "model", "pretrain")


def trained_rows(cfg: Config) -> list[str]:
    """Every name a pre-training job can have: the built-in objectives and the configured variants."""
    return [*OBJECTIVES, *cfg.experiment.variants]


def settings(cfg: Config, name: str) -> tuple[dict, dict]:
    """(model, pretrain) settings of row `name`: the run's, the variant's merged over them, the objective
    set, and `pretrain.init` pointing at the `init_from` row's encoder."""
    model, pretrain = cfg.to_dict()["model"], cfg.to_dict()["pretrain"]
    if name in OBJECTIVES:
        return dict(model, objective=name), pretrain
    variant = _variant(cfg, name)
    model = deep_merge(model, variant.get("model") or {})
    pretrain = deep_merge(pretrain, variant.get("pretrain") or {})
    model["objective"] = variant["objective"]
    if variant.get("init_from"):
        pretrain["init"] = str(encoder_of(cfg, variant["init_from"]))
    return model, pretrain


def init_row(cfg: Config, name: str) -> str | None:
    """The row whose encoder starts row `name` (None: none)."""
    return (cfg.experiment.variants.get(name) or {}).get("init_from") or None


def encoder_of(cfg: Config, name: str):
    return run_of(cfg).encoder(name)


def check(cfg: Config) -> None:
    """Each variant names a known objective, only model/pretrain keys that exist, and an `init_from` that is
    another trained row without a cycle; each experiment row is random, an objective or a variant."""
    variants = cfg.experiment.variants
    for name, variant in variants.items():
        where = f"experiment.variants.{name}"
        if not NAME.match(str(name)) or name in (*OBJECTIVES, RANDOM):
            raise ConfigError(f"config key {where}: a variant's name is letters, digits and _ and not an objective's "
                              f"name ({', '.join((RANDOM, *OBJECTIVES))})")
        if not isinstance(variant, dict):
            raise ConfigError(f"config key {where}: expected a mapping with keys {list(VARIANT_KEYS)}")
        unknown = sorted(set(variant) - set(VARIANT_KEYS))
        if unknown:
            raise ConfigError(f"config key {where}: unknown key(s) {unknown}; allowed: {list(VARIANT_KEYS)}")
        if variant.get("objective") not in OBJECTIVES:
            raise ConfigError(f"config key {where}.objective: {variant.get('objective')!r} is not one of {list(OBJECTIVES)}")
        model, pretrain = cfg.to_dict()["model"], cfg.to_dict()["pretrain"]
        _build(ModelConfig, deep_merge(model, variant.get("model") or {}), f"{where}.model")
        _build(PretrainConfig, deep_merge(pretrain, variant.get("pretrain") or {}), f"{where}.pretrain")
        source = variant.get("init_from")
        if source is not None and source not in trained_rows(cfg):
            raise ConfigError(f"config key {where}.init_from: {source!r} is not a pre-trained row "
                              f"(objectives {list(OBJECTIVES)} or variants {sorted(variants)})")
        seen = [name]
        while source:
            if source in seen:
                raise ConfigError(f"config key {where}.init_from: a cycle {' -> '.join([*seen, source])}")
            seen.append(source)
            source = init_row(cfg, source)
    unknown_rows = [o for o in cfg.experiment.objectives if o != RANDOM and o not in trained_rows(cfg)]
    if unknown_rows:
        raise ConfigError(f"config key experiment.objectives: {unknown_rows} are neither objectives "
                          f"{list(OBJECTIVES)}, random, nor experiment.variants {sorted(variants)}")


def _variant(cfg: Config, name: str) -> dict:
    if name not in cfg.experiment.variants:
        raise ConfigError(f"{name!r} is neither an objective {list(OBJECTIVES)} nor a variant "
                          f"(experiment.variants: {sorted(cfg.experiment.variants)})")
    return cfg.experiment.variants[name]
