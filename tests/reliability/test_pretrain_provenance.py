"""A pre-training run folder never passes off weights as trained with settings or data they never saw,
and a finished run is never stuck: what is missing is written again."""
from __future__ import annotations

import json

import pytest
import yaml

from pretrain_runs import assert_bitwise, run_cli, sha256, weights
from simcrop.train.pretrain import pretrain
from simcrop.train.provenance import SettingsChanged, changed_settings
from train_helpers import stack_collate_factory, tiny_config, tiny_model_factory, write_run

STEPS = 4


def run(tmp, out="out", on_change="fail", **pretrain_overrides):
    cfg = tiny_config(tmp, **{"steps": STEPS, **pretrain_overrides})
    return pretrain(cfg, tmp / "run", tmp / out, tiny_model_factory, stack_collate_factory, progress=False,
                    device="cpu", on_change=on_change)


@pytest.fixture
def finished(tmp_path):
    write_run(tmp_path / "run", n=4)
    run(tmp_path)
    return tmp_path


def test_finished_run_whose_outputs_were_removed_writes_them_again(finished):
    out = finished / "out"
    metrics, encoder = json.loads((out / "metrics.json").read_text()), sha256(out / "encoder.pt")
    (out / "metrics.json").unlink()          # what Snakemake does before rerunning a job
    (out / "encoder.pt").unlink()
    again = run(finished, log_every=1)       # a logging-only change: the same training
    assert again["done"] and again["resumed_from"] == STEPS
    rewritten = json.loads((out / "metrics.json").read_text())
    assert rewritten["losses"] == metrics["losses"] and rewritten["first_losses"] == metrics["first_losses"]
    assert rewritten["falling"] == metrics["falling"]
    assert sha256(out / "encoder.pt") == encoder


@pytest.mark.parametrize("key,value", [("pretrain.lr", 2e-3), ("pretrain.weight_decay", 0.1),
                                       ("model.mask_ratio", 0.5)])
def test_changed_training_setting_fails_naming_the_key(finished, key, value):
    """Same step count, another setting: the finished weights are neither kept nor resumed."""
    before = (finished / "out" / "pretrain.config.yaml").read_text()
    cfg = tiny_config(finished, steps=STEPS)
    section, name = key.split(".")
    setattr(getattr(cfg, section), name, value)
    with pytest.raises(SettingsChanged) as err:
        pretrain(cfg, finished / "run", finished / "out", tiny_model_factory, stack_collate_factory,
                 progress=False, device="cpu")
    assert key in str(err.value) and "--on-change restart" in str(err.value)
    # the provenance on disk still tells what the weights were trained with
    assert (finished / "out" / "pretrain.config.yaml").read_text() == before


def test_restart_trains_anew_with_the_new_settings(finished, tmp_path_factory):
    again = run(finished, on_change="restart", lr=2e-3)
    assert again["resumed_from"] == 0 and again["step"] == STEPS
    fresh = tmp_path_factory.mktemp("fresh")
    write_run(fresh / "run", n=4)
    run(fresh, lr=2e-3)
    assert_bitwise(weights(finished / "out"), weights(fresh / "out"))
    saved = yaml.safe_load((finished / "out" / "pretrain.config.yaml").read_text())
    assert saved["pretrain"]["lr"] == 2e-3


def test_changed_training_data_is_detected(finished):
    sentences = (finished / "run" / "sentences.jsonl").read_text()
    (finished / "run" / "sentences.jsonl").write_text(sentences.replace("Nodule 0 in", "Mass 0 in"))
    with pytest.raises(SettingsChanged, match="training data"):
        run(finished)


def test_retrained_init_encoder_at_the_same_path_is_detected(finished):
    """A variant started from another row's encoder: when that row is retrained, the path stays the same
    but the weights do not, so the finished variant must not be kept."""
    import torch

    init = finished / "init.pt"
    init.write_bytes((finished / "out" / "encoder.pt").read_bytes())
    run(finished, out="from_init", init=str(init))
    state = torch.load(init, weights_only=True)
    first = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][first] = state["model"][first] + 1.0
    torch.save(state, init)
    with pytest.raises(SettingsChanged, match="pretrain.init contents"):
        run(finished, out="from_init", init=str(init))
    again = run(finished, out="from_init", init=str(init), on_change="restart")
    assert again["resumed_from"] == 0 and again["step"] == STEPS


def test_unfinished_run_with_other_settings_is_not_resumed(tmp_path):
    write_run(tmp_path / "run", n=4)
    pretrain(tiny_config(tmp_path, steps=STEPS), tmp_path / "run", tmp_path / "out", tiny_model_factory,
             stack_collate_factory, max_steps=2, progress=False, device="cpu")
    with pytest.raises(SettingsChanged, match="pretrain.lr"):
        run(tmp_path, lr=5e-3)


def test_logging_and_loader_keys_are_not_training_settings():
    base = {"model": {"topk": 8}, "pretrain": {"lr": 1e-3, "log_every": 10, "checkpoint_every": 40,
                                                "keep_every": 0, "num_workers": 2}}
    other = {"model": {"topk": 8}, "pretrain": {"lr": 1e-3, "log_every": 1, "checkpoint_every": 5,
                                                 "keep_every": 5, "num_workers": 0}}
    assert changed_settings(base, other) == []
    assert changed_settings(base, {**other, "model": {"topk": 16}}) == ["model.topk: 8 -> 16"]


@pytest.mark.slow
def test_cli_exit_code_and_message_name_the_changed_key(tmp_path):
    run_dir = write_run(tmp_path / "data" / "run", n=4)["run_dir"]
    first = run_cli(run_dir, tmp_path / "out", steps=2)
    assert first.returncode == 0, first.stderr[-2000:]
    second = run_cli(run_dir, tmp_path / "out", steps=2, lr=3e-3)
    assert second.returncode == 3
    assert "pretrain.lr: 0.001 -> 0.003" in second.stderr and "Traceback" not in second.stderr
