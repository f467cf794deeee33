"""A tiny but real SimCroP pre-training setup (vit_demo, the real MiniLM text encoder, report masks,
augmentation) for the reliability tests, in-process or through the `simcrop pretrain` CLI."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from simcrop.config import from_dict
from simcrop.model.weights import read_checkpoint

TINY_SIMCROP = {"objective": "simcrop", "vit": "vit_demo", "img_size": [32, 32, 16], "patch_size": [16, 16, 8],
                "topk": 2, "decoder_dim": 48, "decoder_depth": 1, "decoder_heads": 3, "text_max_tokens": 32,
                "text_decoder_layers": 1, "proj_dim": 32}
TINY_PRETRAIN = {"steps": 6, "batch_size": 2, "warmup_steps": 2, "log_every": 2, "checkpoint_every": 100,
                 "num_workers": 0, "lr": 1e-3, "min_lr": 1e-5}


def settings(run_dir: Path, **pretrain) -> dict:
    """The config mapping of a tiny SimCroP run whose inputs are in `run_dir` (see train_helpers.write_run)."""
    run_dir = Path(run_dir)
    return {"run": run_dir.name, "results_dir": str(run_dir.parent), "model": dict(TINY_SIMCROP),
            "pretrain": {**TINY_PRETRAIN, **pretrain}}


def config(run_dir: Path, **pretrain):
    return from_dict(settings(run_dir, **pretrain))


def cli_command(run_dir: Path, out_dir: Path, *extra: str, **pretrain) -> list[str]:
    return [sys.executable, "-m", "simcrop.cli", "pretrain", "--set-json", json.dumps(settings(run_dir, **pretrain)),
            "--out-dir", str(out_dir), "--device", "cpu", "--quiet", *extra]


def cli_env() -> dict:
    """One intra-op thread everywhere: float reductions then run in one order, run after run."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TRITON_INTERPRET": "1"}


def run_cli(run_dir: Path, out_dir: Path, *extra: str, **pretrain) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(run_dir, out_dir, *extra, **pretrain), env=cli_env(), capture_output=True,
                          text=True, timeout=300)


def weights(out_dir: Path) -> dict:
    return read_checkpoint(Path(out_dir) / "checkpoints" / "last.pt")["model"]


def assert_bitwise(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
