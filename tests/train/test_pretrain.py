"""The whole trainer on tiny data: falling losses, logs, exact resume (max_steps stop and SIGTERM), init, DDP."""
from __future__ import annotations

import csv
import json
import socket

import pytest
import torch

from simcrop.model.weights import read_checkpoint
from simcrop.train.pretrain import TrainingInterrupted, autocast_for, pretrain
from train_helpers import BUILT, ddp_entry, stack_collate_factory, tiny_config, tiny_model_factory, write_run

STEPS = 8


def run(tmp, out="out", max_steps=None, **pretrain_overrides):
    cfg = tiny_config(tmp, **{"steps": STEPS, **pretrain_overrides})
    return pretrain(cfg, tmp / "run", tmp / out, tiny_model_factory, stack_collate_factory,
                    max_steps=max_steps, progress=False, device="cpu")


def weights(path):
    return read_checkpoint(path)["model"]


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), k


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """One uninterrupted run of STEPS steps (checkpoint only at the end)."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("straight")
    write_run(tmp / "run")
    summary = run(tmp)
    return tmp, summary


def test_straight_run_outputs(straight):
    tmp, summary = straight
    out = tmp / "out"
    assert summary["step"] == STEPS and summary["done"] and summary["resumed_from"] == 0
    assert 0 <= summary["data_wait_share"] <= 1 and summary["samples_per_s"] > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["losses"]) == {"loss", "image"} and all(metrics["falling"].values())
    for name in ("loss", "image", "lr", "data_wait_s", "data_wait_share", "samples_per_s"):
        rows = list(csv.DictReader(open(out / "dvclive" / "plots" / "metrics" / "train" / f"{name}.tsv"),
                                   delimiter="\t"))
        assert [int(r["step"]) for r in rows] == [2, 4, 6, 8], name
    assert not (out / "dvclive" / "dvc.yaml").exists() and not (tmp / "dvc.yaml").exists()
    ckpt = read_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["step"] == STEPS and ckpt["config"]["pretrain"]["steps"] == STEPS
    assert len(ckpt["rng_per_rank"]) == 1 and ckpt["extra"]["first_window"]["loss"] > 0
    assert set(torch.load(out / "encoder.pt", weights_only=True)["model"]) == set(
        k.removeprefix("mae.encoder.") for k in ckpt["model"] if k.startswith("mae.encoder."))
    assert not list(out.rglob("*.tmp*"))


def test_rerun_of_finished_job_changes_nothing(straight):
    tmp, summary = straight
    before = (tmp / "out" / "metrics.json").read_text()
    again = run(tmp)
    assert again["step"] == STEPS and again["resumed_from"] == STEPS and again["losses"] == summary["losses"]
    assert (tmp / "out" / "metrics.json").read_text() == before


def test_overfit_run_shows_falling_loss(tmp_path):
    write_run(tmp_path / "run", n=2)
    summary = run(tmp_path, steps=30, log_every=5, warmup_steps=3, lr=2e-3, flip_prob=0.0,
                  intensity_shift_prob=0.0, scale_crop=[1.0, 1.0], batch_size=2)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["losses"]["image"] < 0.7 * metrics["first_losses"]["image"], metrics
    assert summary["step"] == 30


@pytest.mark.parametrize("workers,accumulation", [(0, 1), (1, 2)])
def test_stop_and_resume_matches_straight_run(tmp_path, straight, workers, accumulation):
    write_run(tmp_path / "run")
    if (workers, accumulation) == (0, 1):
        reference = weights(straight[0] / "out" / "checkpoints" / "last.pt")
    else:
        run(tmp_path, out="ref", num_workers=workers, accumulation=accumulation)
        reference = weights(tmp_path / "ref" / "checkpoints" / "last.pt")
    half = run(tmp_path, max_steps=STEPS // 2, num_workers=workers, accumulation=accumulation)
    assert half["step"] == STEPS // 2 and not half["done"]
    assert not (tmp_path / "out" / "encoder.pt").exists()
    rest = run(tmp_path, num_workers=workers, accumulation=accumulation)
    assert rest["resumed_from"] == STEPS // 2 and rest["step"] == STEPS
    assert_same(weights(tmp_path / "out" / "checkpoints" / "last.pt"), reference)
    rows = list(csv.DictReader(open(tmp_path / "out" / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv"),
                               delimiter="\t"))
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8]


def test_sigterm_saves_then_resume_matches(tmp_path, straight):
    write_run(tmp_path / "run")
    cfg = tiny_config(tmp_path, steps=STEPS)

    def stopping_factory(model_cfg):
        model = tiny_model_factory(model_cfg)
        model.stop_at_call = 3                       # SIGTERM during step 3: it finishes, saves, stops
        return model

    with pytest.raises(TrainingInterrupted) as err:
        pretrain(cfg, tmp_path / "run", tmp_path / "out", stopping_factory, stack_collate_factory,
                 progress=False, device="cpu")
    assert err.value.step == 3 and err.value.code == 128 + 15
    assert read_checkpoint(tmp_path / "out" / "checkpoints" / "last.pt")["step"] == 3
    assert run(tmp_path)["resumed_from"] == 3
    assert_same(weights(tmp_path / "out" / "checkpoints" / "last.pt"),
                weights(straight[0] / "out" / "checkpoints" / "last.pt"))


def test_init_loads_exported_encoder(tmp_path, straight):
    write_run(tmp_path / "run")
    encoder = torch.load(straight[0] / "out" / "encoder.pt", weights_only=True)["model"]
    run(tmp_path, max_steps=0, init=str(straight[0] / "out" / "encoder.pt"))
    for k, v in BUILT[-1].encoder.state_dict().items():
        assert torch.equal(v, encoder[k]), k


def test_precision_choice():
    assert autocast_for("auto", torch.device("cpu"))().__class__.__name__ == "nullcontext"
    assert isinstance(autocast_for("bf16", torch.device("cpu"))(), torch.autocast)
    with pytest.raises(ValueError, match="precision"):
        autocast_for("fp16", torch.device("cpu"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_process_ddp_gloo(tmp_path):
    write_run(tmp_path / "run")
    overrides = {"steps": 3, "log_every": 1, "checkpoint_every": 2}
    torch.multiprocessing.spawn(ddp_entry, args=(2, free_port(), str(tmp_path), overrides), nprocs=2, join=True)
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert_same(rank0, rank1)
    ckpt = read_checkpoint(tmp_path / "out" / "checkpoints" / "last.pt")
    assert ckpt["step"] == 3 and len(ckpt["rng_per_rank"]) == 2
    assert not torch.equal(ckpt["rng_per_rank"][0]["torch"], ckpt["rng_per_rank"][1]["torch"])
    assert_same({k: v for k, v in rank0.items() if k in ckpt["model"]}, ckpt["model"])
    assert sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir()) == ["last.pt", "timing.json"]
