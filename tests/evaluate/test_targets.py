from pathlib import Path

import pytest

from simcrop import config as cfgmod
from simcrop.evaluate import targets


@pytest.fixture
def cfg():
    return cfgmod.from_dict({
        "run": "r", "results_dir": "out",
        "probe": {"labels": ["Emphysema"]},
        "experiment": {"objectives": ["random", "simcrop"], "tasks": ["probe", "segment", "grounding"],
                       "downstream": ["cc", "lungs"]},
        "downstream": {"cc": {"dataset": "ccccii", "root": "/d/cc", "probe_task": "multiclass"},
                       "lungs": {"dataset": "luna16", "root": "/d/l", "tasks": ["segment"], "label_map": "luna16",
                                 "classes": ["left_lung"]}}})


def test_main_and_downstream_data_dirs(cfg):
    assert targets.data_dir(cfg, "main") == Path("out/r")
    assert targets.data_dir(cfg, "cc") == Path("out/r/downstream/cc")
    with pytest.raises(cfgmod.ConfigError, match="'nope' is not configured"):
        targets.data_dir(cfg, "nope")


def test_settings_come_from_the_dataset_entry(cfg):
    assert targets.probe_settings(cfg, "main") == {"task": "multilabel", "label_names": ["Emphysema"]}
    assert targets.probe_settings(cfg, "cc") == {"task": "multiclass", "label_names": None}
    assert targets.segment_settings(cfg, "lungs") == {"label_map": "luna16", "classes": ["left_lung"]}
    assert targets.segment_settings(cfg, "main") == {"label_map": "organ", "classes": None}
    assert targets.tasks_of(cfg, "main") == ["probe", "segment"]
    assert targets.tasks_of(cfg, "cc") == ["probe"] and targets.tasks_of(cfg, "lungs") == ["segment"]
    data = targets.downstream_data_config(cfg, "cc")
    assert (data.dataset, data.root, data.val_fraction) == ("ccccii", "/d/cc", cfg.data.val_fraction)


def test_encoders_and_fraction_names(cfg):
    assert targets.encoder_path(cfg, "random") is None
    assert targets.encoder_path(cfg, "mae") == Path("out/r/pretrain/mae/encoder.pt")
    assert targets.checkpoint_path(cfg, "simcrop") == Path("out/r/pretrain/simcrop/checkpoints/last.pt")
    assert [targets.percent(f) for f in (0.01, 0.1, 1.0, 0.25)] == ["1", "10", "100", "25"]


def test_image_only_objectives_get_n_a_text_tasks(tiny_run, tmp_path, text_encoder):
    """MAE and the supervised upper bound have no text side: their text-task files say "not applicable",
    which the results table shows as n/a."""
    import json

    from simcrop.evaluate.run import run_task
    from simcrop.model.simcrop import build_pretrain_model
    from simcrop.train.checkpoint import save_checkpoint

    cfg = cfgmod.from_dict({"run": "r", "results_dir": "out",
                            "experiment": {"objectives": ["random", "mae", "simcrop", "supervised"]}})
    assert targets.encoder_path(cfg, "supervised") == Path("out/r/pretrain/supervised/encoder.pt")
    assert targets.IMAGE_ONLY == ("mae", "supervised")
    assert [o for o in cfg.experiment.objectives if targets.has_text_side(o)] == ["simcrop"]
    config = cfgmod.from_dict({"model": {"objective": "supervised", "vit": "vit_demo", "img_size": [32, 32, 16],
                                         "patch_size": [8, 8, 4]}}).to_dict()
    model = build_pretrain_model(cfgmod.from_dict(config).model)
    checkpoint = save_checkpoint(tmp_path / "supervised" / "last.pt", model, config_dict=config)
    for task in ("zeroshot", "retrieval", "grounding"):
        out = tmp_path / f"{task}.json"
        metrics = run_task(task, None, checkpoint, tiny_run, out, text_encoder=text_encoder)
        assert json.loads(out.read_text()) == metrics and metrics["applicable"] is False, task
