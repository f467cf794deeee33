
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


def test_settings_come_from_the_dataset_entry(cfg):
    assert targets.probe_settings(cfg, "main") == {"task": "multilabel", "label_names": ["Emphysema"]}
    assert targets.probe_settings(cfg, "cc") == {"task": "multiclass", "label_names": None}
    assert targets.segment_settings(cfg, "lungs") == {"label_map": "luna16", "classes": ["left_lung"]}
    assert targets.segment_settings(cfg, "main") == {"label_map": "organ", "classes": None}
    assert targets.tasks_of(cfg, "main") == ["probe", "segment"]
    assert targets.tasks_of(cfg, "cc") == ["probe"] and targets.tasks_of(cfg, "lungs") == ["segment"]
    data = targets.downstream_data_config(cfg, "cc")
    assert (data.dataset, data.root, data.val_fraction) == ("ccccii", "/d/cc", cfg.data.val_fraction)


def test_image_only_objectives_get_n_a_text_tasks(tiny_run, tmp_path, text_encoder):
    """MAE and the supervised upper bound have no text side: their text-task files say "not applicable",
    which the results table shows as n/a."""
    import json

    from simcrop.evaluate.run import run_task
    from simcrop.model.factory import build_pretrain_model
    from simcrop.train.checkpoint import save_checkpoint

    config = cfgmod.from_dict({"model": {"objective": "supervised", "vit": "vit_demo", "img_size": [32, 32, 16],
                                         "patch_size": [8, 8, 4]}}).to_dict()
    model = build_pretrain_model(cfgmod.from_dict(config).model)
    checkpoint = save_checkpoint(tmp_path / "supervised" / "last.pt", model, config_dict=config)
    for task in ("zeroshot", "retrieval", "grounding"):
        out = tmp_path / f"{task}.json"
        metrics = run_task(task, None, checkpoint, tiny_run, out, text_encoder=text_encoder)
        assert json.loads(out.read_text()) == metrics and metrics["applicable"] is False, task
