"""Exact resume of the real SimCroP objective — image masks, report (MLM) masks, augmentation, loader
workers — and SIGKILLs of `simcrop pretrain` at random moments: the final checkpoint and encoder of an
interrupted run are byte-identical to an uninterrupted one's."""
from __future__ import annotations

import random
import subprocess
import time

import pytest

from pretrain_runs import assert_bitwise, cli_command, cli_env, config, run_cli, sha256, weights
from simcrop.model.factory import build_pretrain_model
from simcrop.model.weights import read_checkpoint
from simcrop.train.pretrain import pretrain
from train_helpers import write_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("data") / "run", n=5)["run_dir"]


def train(run_dir, out_dir, text_encoder, max_steps=None, **pretrain_overrides):
    """In-process run of the real SimCroP model (the loaded text encoder reused: it is frozen)."""
    return pretrain(config(run_dir, **pretrain_overrides), run_dir, out_dir,
                    lambda model_cfg: build_pretrain_model(model_cfg, text_encoder=text_encoder),
                    max_steps=max_steps, progress=False, device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_interrupted_simcrop_run_is_bitwise_identical(tmp_path, run_dir, text_encoder, workers):
    # log_every 4 and a stop at step 3: the resumed run must also continue the half-filled loss window
    straight = train(run_dir, tmp_path / "straight", text_encoder, num_workers=workers, log_every=4)
    assert train(run_dir, tmp_path / "resumed", text_encoder, max_steps=3, num_workers=workers,
                 log_every=4)["step"] == 3
    resumed = train(run_dir, tmp_path / "resumed", text_encoder, num_workers=workers, log_every=4)
    assert resumed["resumed_from"] == 3 and resumed["step"] == straight["step"] == 6
    assert resumed["losses"] == straight["losses"]                     # report loss included, exactly
    assert_bitwise(weights(tmp_path / "resumed"), weights(tmp_path / "straight"))


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun_matches(tmp_path, run_dir):
    straight = run_cli(run_dir, tmp_path / "straight", checkpoint_every=1)
    assert straight.returncode == 0, straight.stderr[-2000:]
    started = time.monotonic()
    # how long a run takes here, to pick kill moments inside it (start-up included)
    timing = run_cli(run_dir, tmp_path / "timing", checkpoint_every=1)
    duration = time.monotonic() - started
    assert timing.returncode == 0
    rng = random.Random(13)
    out = tmp_path / "killed"
    last = out / "checkpoints" / "last.pt"
    for attempt in range(3):
        process = subprocess.Popen(cli_command(run_dir, out, checkpoint_every=1), env=cli_env(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if attempt == 0:                               # surely mid-training: right after the first save
            while process.poll() is None and not last.exists():
                time.sleep(0.02)
        else:                                          # then at random moments
            time.sleep(rng.uniform(0.3, 0.95) * duration)
        process.kill()                                 # SIGKILL: no handler runs
        process.wait()
        if attempt == 0:
            assert 0 < read_checkpoint(last)["step"] < 6, "the first kill should land between checkpoints"
    final = run_cli(run_dir, out, checkpoint_every=1)
    assert final.returncode == 0, final.stderr[-2000:]
    assert_bitwise(weights(out), weights(tmp_path / "straight"))
    for name in ("checkpoints/last.pt", "encoder.pt"):
        assert sha256(out / name) == sha256(tmp_path / "straight" / name), name
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]          # no temporary left behind
