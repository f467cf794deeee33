"""Named pre-training rows: settings merged over the run's, an MAE start, and errors that name the key."""
import json
import re

import pytest

from simcrop import config
from simcrop.config import ConfigError
from simcrop.train import variants

BASE = {"model": {"topk": 8, "loss_weights": {"image": 1.0, "align": 1.0, "report": 1.0}},
        "pretrain": {"steps": 50, "lr": 3e-4}}


def cfg_with(variant_map, objectives=None):
    values = json.loads(json.dumps(BASE))
    values["experiment"] = {"objectives": objectives or ["random", "mae", *variant_map], "variants": variant_map}
    return config.from_dict(values)


def test_variant_settings_are_the_runs_with_its_own_merged_over_them():
    cfg = cfg_with({"no_align": {"objective": "simcrop", "model": {"loss_weights": {"align": 0.0}},
                                 "pretrain": {"seed": 7}}})
    model, pretrain = variants.settings(cfg, "no_align")
    assert model["objective"] == "simcrop"
    assert model["loss_weights"] == {"image": 1.0, "align": 0.0, "report": 1.0}     # deep merge keeps the rest
    assert model["topk"] == 8 and pretrain["steps"] == 50 and pretrain["lr"] == 3e-4
    assert pretrain["seed"] == 7 and pretrain["init"] == ""
    plain_model, plain_pretrain = variants.settings(cfg, "mae")
    assert plain_model["objective"] == "mae" and plain_pretrain["seed"] == 42


def test_init_from_points_at_the_other_rows_encoder():
    cfg = cfg_with({"simcrop_from_mae": {"objective": "simcrop", "init_from": "mae"}})
    _, pretrain = variants.settings(cfg, "simcrop_from_mae")
    assert pretrain["init"] == str(cfg.run_dir / "pretrain" / "mae" / "encoder.pt")
    assert variants.init_row(cfg, "simcrop_from_mae") == "mae"
    assert variants.init_row(cfg, "mae") is None
    assert variants.trained_rows(cfg)[-1] == "simcrop_from_mae"


@pytest.mark.parametrize("variant_map, objectives, message", [
    ({"v": {"objective": "simcrop", "init_from": "nowhere"}}, None, "experiment.variants.v.init_from"),
    ({"a": {"objective": "simcrop", "init_from": "b"}, "b": {"objective": "mae", "init_from": "a"}}, None,
     "a cycle a -> b -> a"),
    ({"v": {"objective": "simcrop", "model": {"topk_typo": 3}}}, None, "experiment.variants.v.model.topk_typo"),
    ({"v": {"objective": "simcrop", "pretrain": {"stpes": 3}}}, None, "experiment.variants.v.pretrain.stpes"),
    ({"mae": {"objective": "simcrop"}}, ["random", "mae"], "experiment.variants.mae"),
    ({}, ["random", "simcrop_seed2"], "experiment.objectives: ['simcrop_seed2']"),
])
def test_bad_variants_fail_naming_the_key(variant_map, objectives, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        cfg_with(variant_map, objectives)


def test_unknown_objective_of_a_variant_fails_in_the_schema():
    with pytest.raises(ConfigError, match="experiment.variants.v.objective"):
        cfg_with({"v": {"objective": "simclr"}})
