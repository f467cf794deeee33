import dataclasses
import importlib
import re
import subprocess
import sys
import typing

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


# Every enum of config/schema.yaml and the code constant it must equal: "*" is any key of a free mapping
# (experiment.variants, downstream). A new enum fails test_every_schema_enum_comes_from_the_code until it
# is listed here, so each list of allowed values has one home in the code.
ENUMS = {
    "synthesize.preset": ("simcrop.data.synthetic.presets", "PRESETS"),
    "data.dataset": ("simcrop.data.ingest", "DATASETS"),
    "data.release": ("simcrop.config", "CTRATE_RELEASES"),
    "preprocess.format": ("simcrop.layout", "VOLUME_FORMATS"),
    "preprocess.cache_codec": ("simcrop.data.preprocessed_io", "CACHE_CODECS"),
    "sentences.sections[]": ("simcrop.text.sentences", "SECTIONS"),
    "model.objective": ("simcrop.model.objectives", "OBJECTIVES"),
    "model.pos_embed": ("simcrop.model.objectives", "POS_EMBED_KINDS"),
    "model.negatives": ("simcrop.model.objectives", "NEGATIVES"),
    "model.mlm_loss_on": ("simcrop.model.objectives", "MLM_LOSS_ON"),
    "model.topk_selection": ("simcrop.model.objectives", "TOPK_SELECTIONS"),
    "pretrain.precision": ("simcrop.train.loop", "PRECISIONS"),
    "pretrain.pad_mode": ("simcrop.data.transforms", "PAD_MODES"),
    "evaluate.split": ("simcrop.data.manifest", "SPLITS"),
    "probe.protocol": ("simcrop.data.splits", "PROTOCOLS"),
    "probe.view": ("simcrop.evaluate.probe_features", "VIEWS"),
    "segment.protocol": ("simcrop.data.splits", "PROTOCOLS"),
    "experiment.tasks[]": ("simcrop.config", "EXPERIMENT_TASKS"),
    "experiment.segment_label_map": ("simcrop.config", "MAIN_LABEL_MAPS"),
    "experiment.variants.*.objective": ("simcrop.model.objectives", "OBJECTIVES"),
    "downstream.*.dataset": ("simcrop.data.ingest", "DATASETS", {"synthetic"}),   # all but these
    "downstream.*.tasks[]": ("simcrop.layout", "FRACTION_TASKS"),
    "downstream.*.probe_task": ("simcrop.evaluate.probe", "TASKS"),
    "downstream.*.label_map": ("simcrop.evaluate.segment", "LABEL_MAPS"),
}
FIXED_KEYS = {"model.loss_weights": ("simcrop.model.objectives", "LOSS_NAMES")}   # mappings with fixed keys
JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number", list: "array", dict: "object"}


def _constant(module, name, leave_out=()):
    values = getattr(importlib.import_module(module), name)
    return {v for v in values if v not in leave_out}


def _resolve(node, schema):
    ref = node.get("$ref", "")
    return _resolve(schema["$defs"][ref.split("/")[-1]], schema) if ref else node


def _schema_enums(node, schema, path=""):
    """{dotted path: enum values} of every enum under `node` (array items: `path[]`, free mappings: `*`)."""
    node, found = _resolve(node, schema), {}
    if "enum" in node:
        found[path] = node["enum"]
    for name, sub in node.get("properties", {}).items():
        found |= _schema_enums(sub, schema, f"{path}.{name}" if path else name)
    if isinstance(node.get("additionalProperties"), dict):
        found |= _schema_enums(node["additionalProperties"], schema, f"{path}.*")
    if "items" in node:
        found |= _schema_enums(node["items"], schema, f"{path}[]")
    for option in node.get("oneOf", []):
        found |= _schema_enums(option, schema, path)
    return found


def _schema_types(node) -> set:
    """The JSON types a (resolved) property accepts."""
    if "type" in node:
        return set(node["type"]) if isinstance(node["type"], list) else {node["type"]}
    if "enum" in node:
        return {JSON_TYPES[type(v)] for v in node["enum"]}
    return set().union(*(_schema_types(o) for o in node.get("oneOf", [])))


def _check_fields(cls, node, schema, where=""):
    """Each field of dataclass `cls` against its schema property: same keys, compatible type, and a default
    the schema accepts. Returns the problems."""
    import jsonschema

    node, problems = _resolve(node, schema), []
    fields = {f.name: f for f in dataclasses.fields(cls)}
    props = node.get("properties", {})
    problems += [f"{where}{k}: a dataclass field without a schema property" for k in sorted(set(fields) - set(props))]
    problems += [f"{where}{k}: a schema property without a dataclass field" for k in sorted(set(props) - set(fields))]
    hints = typing.get_type_hints(cls)
    for name in sorted(set(fields) & set(props)):
        field, prop, key = fields[name], _resolve(props[name], schema), f"{where}{name}"
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if dataclasses.is_dataclass(default):
            problems += _check_fields(type(default), prop, schema, f"{key}.")
            continue
        hint = hints[name]
        allowed = {JSON_TYPES[t] for t in typing.get_args(hint) if t in JSON_TYPES} or {JSON_TYPES[hint]}
        if type(None) in typing.get_args(hint):
            allowed.add("null")
        accepted = _schema_types(prop)
        if not accepted or not accepted <= allowed | ({"number"} if "integer" in allowed else set()):
            problems.append(f"{key}: the field is {sorted(allowed)}, the schema {sorted(accepted) or 'untyped'}")
        if name in node.get("required", ()):       # must be given: the default is a placeholder
            continue
        errors = list(jsonschema.Draft202012Validator({**prop, "$defs": schema.get("$defs", {})}).iter_errors(default))
        if errors:
            problems.append(f"{key}: the default {default!r} fails the schema: {errors[0].message}")
    return problems


def test_schema_agrees_with_the_dataclasses():
    schema = yaml.safe_load(cfgmod.SCHEMA_PATH.read_text())
    problems = _check_fields(cfgmod.Config, schema, schema)
    problems += _check_fields(cfgmod.DownstreamDatasetConfig, schema["$defs"]["downstream_dataset"], schema,
                              "downstream.*.")
    assert not problems, "\n".join(problems)


def test_every_schema_enum_comes_from_the_code():
    schema = yaml.safe_load(cfgmod.SCHEMA_PATH.read_text())
    enums = _schema_enums(schema, schema)
    assert set(enums) == set(ENUMS), "schema enums without a code constant in ENUMS (or gone from the schema)"
    for path, (module, name, *leave_out) in ENUMS.items():
        code = _constant(module, name, *leave_out)
        assert len(enums[path]) == len(set(enums[path])) and set(enums[path]) == code, \
            f"config/schema.yaml {path}: {enums[path]} but {module}.{name} says {sorted(code)}"
    for path, (module, name) in FIXED_KEYS.items():
        node = schema
        for part in path.split("."):
            node = node["properties"][part]
        assert set(node["properties"]) == _constant(module, name), path


def test_the_variants_and_the_models_share_one_list_of_objectives():
    from simcrop.model import objectives
    from simcrop.train import variants

    assert variants.OBJECTIVES is objectives.OBJECTIVES
    assert set(cfgmod.ModelConfig().loss_weights) == set(objectives.LOSS_NAMES)
    assert cfgmod.ModelConfig().objective in objectives.OBJECTIVES


def test_loading_a_config_does_not_import_torch(repo_root):
    """Snakemake's DAG and `simcrop config` load configs (variants included) without paying for torch."""
    code = ("import sys; from simcrop import config; config.load([sys.argv[1]]); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code, str(repo_root / "config" / "config.yaml")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


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
