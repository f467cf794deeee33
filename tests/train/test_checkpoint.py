"""Checkpoints: exact round trip (model, optimiser, scheduler, RNG), frozen keys, atomic writes."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from simcrop.model import weights
from simcrop.train import checkpoint as ck
from simcrop.optim import build_optimizer, build_scheduler
from train_helpers import TinyMAE


class WithText(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.text_encoder = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        self.text_encoder.register_buffer("position_ids", torch.arange(4))
        self.text_encoder.requires_grad_(False)


def trained(seed=0):
    torch.manual_seed(seed)
    model = TinyMAE()
    opt = build_optimizer(model, 1e-3, 0.05)
    sched = build_scheduler(opt, 1e-3, 1e-5, 2, 10)
    for _ in range(2):
        model({"image": torch.rand(2, 1, 32, 32, 16)})["loss"].backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    return model, opt, sched


def test_round_trip_restores_everything(tmp_path):
    model, opt, sched = trained()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    ck.save_checkpoint(tmp_path / "last.pt", model, opt, sched, step=2, config_dict={"a": 1}, extra={"e": 5})
    expected = (random.random(), np.random.rand(), torch.rand(3))

    model2, opt2, sched2 = trained(seed=9)
    got = ck.load_checkpoint(tmp_path / "last.pt", model2, opt2, sched2)
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(3), expected[2])
    assert got["step"] == 2 and got["config"] == {"a": 1} and got["extra"] == {"e": 5}
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    assert sched2.state_dict() == sched.state_dict()
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert all(torch.equal(s1[i]["exp_avg"], s2[i]["exp_avg"]) for i in s1)
    assert not list(tmp_path.glob("*tmp*"))


def test_frozen_text_encoder_is_left_out_and_only_it_may_be_missing(tmp_path):
    model = WithText()
    ck.save_checkpoint(tmp_path / "c.pt", model)
    saved = weights.read_checkpoint(tmp_path / "c.pt")
    assert set(saved["model"]) == {"encoder.weight", "encoder.bias"}
    assert "text_encoder.position_ids" in saved["excluded"]
    ck.load_checkpoint(tmp_path / "c.pt", WithText())                         # frozen keys missing: fine
    state = dict(saved["model"])
    del state["encoder.bias"]
    with pytest.raises(weights.CheckpointError, match="encoder.bias"):
        weights.load_model_state(WithText(), state)
    with pytest.raises(weights.CheckpointError, match="unexpected"):
        weights.load_model_state(WithText(), {**saved["model"], "decoder.weight": torch.zeros(1)})
    trainable = WithText()
    trainable.text_encoder.requires_grad_(True)                              # unfrozen: saved and required
    ck.save_checkpoint(tmp_path / "t.pt", trainable)
    assert "text_encoder.0.weight" in weights.read_checkpoint(tmp_path / "t.pt")["model"]


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched = trained()
    path = ck.save_checkpoint(tmp_path / "last.pt", model, opt, sched, step=1)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")                # save_torch hands torch an open file
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(path, model, opt, sched, step=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]               # no temporary left behind


def test_latest_checkpoint_and_milestones(tmp_path):
    assert ck.latest_checkpoint(tmp_path / "none") is None
    (tmp_path / "step_000010.pt").write_bytes(b"a")
    (tmp_path / "step_000200.pt").write_bytes(b"b")
    assert ck.latest_checkpoint(tmp_path).name == "step_000200.pt"
    (tmp_path / "last.pt").write_bytes(b"c")
    assert ck.latest_checkpoint(tmp_path).name == "last.pt"
    ck.copy_checkpoint(tmp_path / "last.pt", tmp_path / ck.milestone_name(300))
    assert (tmp_path / "step_000300.pt").read_bytes() == b"c"
    with pytest.raises(FileNotFoundError):
        weights.read_checkpoint(tmp_path / "missing.pt")


def test_identical_contents_give_identical_bytes(tmp_path):
    """Same tensors and values, whatever the folder, and also after a load (a resumed run's state)."""
    model, opt, sched = trained()
    (tmp_path / "a").mkdir()
    first = ck.save_checkpoint(tmp_path / "a" / "last.pt", model, opt, sched, step=2, extra={"w": {"loss": 1.5}})
    second = ck.save_checkpoint(tmp_path / "last.pt", model, opt, sched, step=2, extra={"w": {"loss": 1.5}})
    assert first.read_bytes() == second.read_bytes()
    loaded_model, loaded_opt, loaded_sched = trained(seed=1)
    ck.load_checkpoint(first, loaded_model, loaded_opt, loaded_sched)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    ck.save_checkpoint(tmp_path / "a" / "last.pt", model, opt, sched, step=2, extra={"w": {"loss": 1.5}})
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    again = ck.save_checkpoint(tmp_path / "b.pt", loaded_model, loaded_opt, loaded_sched, step=2,
                               extra={"w": {"loss": 1.5}})
    assert (tmp_path / "a" / "last.pt").read_bytes() == again.read_bytes()
