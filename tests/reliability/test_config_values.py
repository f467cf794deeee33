"""Settings that cannot work fail config validation naming the key, and the CLI run by hand resolves
the same config as Snakemake does with the same overlay."""
from __future__ import annotations

import copy

import pytest
import yaml

from simcrop import cli
from simcrop import config as config_mod
from simcrop.config import ConfigError, from_dict


@pytest.mark.parametrize("values,key", [
    ({"preprocess": {"hu_window": [1000, -1000]}}, "preprocess.hu_window"),
    ({"preprocess": {"hu_window": [0, 0]}}, "preprocess.hu_window"),
    ({"preprocess": {"spacing": [1e6, 3, 6]}}, "preprocess.spacing"),
    ({"preprocess": {"spacing": [0.01, 3, 6]}}, "preprocess.spacing"),
    ({"preprocess": {"min_spacing_mm": 5, "max_spacing_mm": 2, "spacing": [3, 3, 3]}}, "min_spacing_mm"),
    ({"model": {"img_size": [100, 96, 48]}}, "model.img_size"),
    ({"segment": {"crop": [64, 64, 36]}}, "segment.crop"),
    ({"pretrain": {"lr": 1e-4, "min_lr": 1e-3}}, "pretrain.min_lr"),
])
def test_impossible_values_fail_naming_the_key(values, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict(values)


def test_impossible_value_stops_the_cli_before_work(caplog, tmp_path):
    code = cli.main(["config", "--set-json", '{"preprocess": {"hu_window": [1000, -1000]}}'])
    assert code == 2 and "preprocess.hu_window" in caplog.text


def test_cli_and_snakemake_resolve_the_same_config_from_one_overlay(tmp_path, capsys, repo_root):
    from snakemake.utils import update_config          # how Snakemake merges --configfile over configfile:

    overlay = {"run": "mine", "pretrain": {"steps": 7}, "model": {"vit": "vit_demo"}}
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(overlay))
    snakemake_config = copy.deepcopy(config_mod.read_yaml(repo_root / "config" / "config.yaml"))
    update_config(snakemake_config, overlay)
    expected = from_dict(snakemake_config).to_dict()

    assert cli.main(["config", "--config", str(tmp_path / "my.yaml")]) == 0
    by_hand = yaml.safe_load(capsys.readouterr().out)
    assert by_hand == expected
    # e.g. the demo's top-K and decoder depth, not the dataclass defaults
    assert by_hand["model"]["topk"] == config_mod.read_yaml(repo_root / "config" / "config.yaml")["model"]["topk"]
