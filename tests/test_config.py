import dataclasses
import re

import pytest
import yaml

from simcrop import config as cfgmod


def _schema_keys(node, prefix=""):
    keys = set()
    for name, sub in node.get("properties", {}).items():
        dotted = f"{prefix}{name}"
        keys.add(dotted)
        if sub.get("type") == "object":
            keys |= _schema_keys(sub, dotted + ".")
    return keys


def _dataclass_keys(cls, prefix=""):
    keys = set()
    for field in dataclasses.fields(cls):
        dotted = f"{prefix}{field.name}"
        keys.add(dotted)
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if dataclasses.is_dataclass(default):
            keys |= _dataclass_keys(type(default), dotted + ".")
        elif isinstance(default, dict):  # fixed-key mappings such as model.loss_weights
            keys |= {f"{dotted}.{name}" for name in default}
    return keys


def test_schema_and_dataclasses_have_the_same_keys():
    schema = yaml.safe_load(cfgmod.SCHEMA_PATH.read_text())
    assert _schema_keys(schema) == _dataclass_keys(cfgmod.Config)


def test_every_shipped_config_is_valid(repo_root):
    files = sorted((repo_root / "config").glob("config.yaml")) + sorted((repo_root / "config").glob("*/*.yaml"))
    files = [f for f in files if "profiles" not in f.parts]
    assert files, "no config files found"
    for path in files:
        cfgmod.load([str(path)])


def test_overlays_merge_in_order(tmp_path):
    base = tmp_path / "a.yaml"
    base.write_text("preprocess: {spacing: [1.0, 1.0, 2.0], shard_size: 7}\n")
    over = tmp_path / "b.yaml"
    over.write_text("preprocess: {shard_size: 9}\n")
    cfg = cfgmod.load([str(base), str(over)], ['{"run": "x"}'])
    assert cfg.preprocess.spacing == [1.0, 1.0, 2.0]
    assert cfg.preprocess.shard_size == 9
    assert cfg.run == "x"
    assert cfg.data.dataset == "synthetic"  # default filled


@pytest.mark.parametrize("values, needle", [
    ({"preprocess": {"shardsize": 3}}, "preprocess.shardsize"),
    ({"bogus": 1}, "bogus"),
    ({"data": {"folder": {"imgs": "x"}}}, "data.folder.imgs"),
    ({"preprocess": {"spacing": [1, 1]}}, "preprocess.spacing"),
    ({"data": {"dataset": "imagenet"}}, "data.dataset"),
    ({"run": "has space"}, "run"),
])
def test_bad_config_names_the_key(values, needle):
    with pytest.raises(cfgmod.ConfigError, match=needle.replace(".", r"\.")):
        cfgmod.from_dict(values)


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("preprocess: [unclosed\n")
    with pytest.raises(cfgmod.ConfigError, match="broken.yaml"):
        cfgmod.load([str(path)])
    with pytest.raises(cfgmod.ConfigError, match="not found"):
        cfgmod.load([str(tmp_path / "missing.yaml")])


def test_dump_round_trips(tmp_path):
    cfg = cfgmod.from_dict({"preprocess": {"size": [4, 5, 6]}})
    path = tmp_path / "resolved.yaml"
    path.write_text(cfgmod.dump(cfg))
    assert cfgmod.load([str(path)]) == cfg


def test_downstream_entries_match_their_schema():
    schema = yaml.safe_load(cfgmod.SCHEMA_PATH.read_text())["$defs"]["downstream_dataset"]
    assert set(schema["properties"]) == {f.name for f in dataclasses.fields(cfgmod.DownstreamDatasetConfig)}


@pytest.mark.parametrize("values, needle", [
    ({"downstream": {"x": {"dataset": "btcv", "root": "/b", "label_mapp": "btcv"}}}, "downstream.x.label_mapp"),
    ({"downstream": {"x": {"dataset": "btcv"}}}, "root"),
    ({"downstream": {"x": {"dataset": "btcv", "root": "/b", "tasks": ["retrieval"]}}}, "retrieval"),
    ({"experiment": {"downstream": ["y"]}}, "experiment.downstream names ['y']"),
    ({"experiment": {"objectives": ["random", "byol"]}}, "byol"),
])
def test_bad_experiment_config_names_the_problem(values, needle):
    with pytest.raises(cfgmod.ConfigError, match=re.escape(needle)):
        cfgmod.from_dict(values)


def test_downstream_entry_gets_defaults():
    cfg = cfgmod.from_dict({"downstream": {"lungs": {"dataset": "luna16", "root": "/l", "tasks": ["segment"]}}})
    entry = cfg.downstream_dataset("lungs")
    assert (entry.dataset, entry.tasks, entry.probe_task, entry.label_map) == ("luna16", ["segment"], "multilabel",
                                                                                "organ")
