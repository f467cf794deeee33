"""DDP through the workflow: with pretrain.gpus_per_node 2 the pretrain rule runs two gloo ranks (torchrun, CPU),
both finish with the same weights as the checkpoint's, and a run SIGKILLed mid-training (Snakemake, torchrun
and both ranks) and rerun ends bitwise-identical to an uninterrupted one, as single-process runs do."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from pretrain_runs import assert_bitwise
from simcrop.config import from_dict
from simcrop.model.factory import build_pretrain_model
from simcrop.model.weights import read_checkpoint
from simcrop.train.distributed import parameter_digest, trained_parameters
from train_helpers import write_run

pytestmark = pytest.mark.slow

STEPS = 3
CONFIG = {
    "run": "ddp",
    # a tiny MAE (no text encoder to load in each rank): the wiring of the processes is under test
    "model": {"objective": "mae", "vit": "vit_demo", "img_size": [32, 32, 16], "patch_size": [16, 16, 8],
              "decoder_dim": 48, "decoder_depth": 1, "decoder_heads": 3},
    "pretrain": {"steps": STEPS, "batch_size": 2, "warmup_steps": 1, "log_every": 1, "checkpoint_every": 1,
                 "num_workers": 0, "lr": 1e-3, "min_lr": 1e-5, "gpus_per_node": 2, "nodes": 1},
    "experiment": {"objectives": ["random", "mae"], "tasks": ["probe"], "downstream": []},
}


def workdir(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A work folder whose run already holds what the data half leaves (manifest, sentences, QC, volumes)."""
    work = tmp_path / name
    write_run(work / "results" / CONFIG["run"], n=5)
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    return work, config


def snakemake(repo_root: Path, work: Path, config: Path, *extra: str) -> list[str]:
    # only the pretrain job runs: its inputs exist (write_run) and, without provenance, are not remade
    return [sys.executable, "-m", "snakemake", "--snakefile", str(repo_root / "workflow" / "Snakefile"),
            "--directory", str(work), "--configfile", str(config), "--cores", "2", *extra,
            f"results/{CONFIG['run']}/pretrain/mae/encoder.pt"]


def out_dir(work: Path) -> Path:
    return work / "results" / CONFIG["run"] / "pretrain" / "mae"


def tool_env() -> dict:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("OMP_NUM_THREADS", None)          # torchrun gives each rank one thread
    return env


def run(args, cwd) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=300)
    if result.returncode:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in Path(args[args.index("--directory") + 1])
                         .rglob("logs/**/*.log"))
        pytest.fail(f"snakemake exited {result.returncode}\n{result.stderr[-3000:]}\n{logs}")
    return result


def descendants(root: int) -> list[int]:
    """root and every process below it (torchrun starts its ranks in new sessions: a process-group kill
    would miss them)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += parents.get(pid, [])
    return tree


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def checkpoint_digest(out: Path) -> tuple[dict, str]:
    """The checkpoint's weights and the digest of its trained parameters (what each rank reports)."""
    ckpt = read_checkpoint(out / "checkpoints" / "last.pt")
    names = trained_parameters(build_pretrain_model(from_dict(ckpt["config"]).model))
    return ckpt, parameter_digest({name: ckpt["model"][name] for name in names})


@pytest.mark.timeout(420)
def test_two_gloo_ranks_through_snakemake_agree_and_resume_exactly(repo_root, tmp_path):
    straight, straight_cfg = workdir(tmp_path, "straight")
    run(snakemake(repo_root, straight, straight_cfg), repo_root)
    metrics = json.loads((out_dir(straight) / "metrics.json").read_text())
    ckpt, digest = checkpoint_digest(out_dir(straight))
    assert metrics["world_size"] == 2 and metrics["step"] == STEPS and len(ckpt["rng_per_rank"]) == 2
    assert metrics["weights_sha256_per_rank"] == [digest, digest]      # both ranks hold the checkpoint's weights
    log = (straight / "results" / CONFIG["run"] / "logs" / "pretrain" / "mae.log").read_text()
    assert "torch.distributed.run --standalone --nnodes 1 --nproc-per-node 2" in log and "gloo" in log
    assert not (straight / "data").exists(), "only the pretrain job should have run"

    # SIGKILL the whole tree (Snakemake, the launcher's torchrun, both ranks) once a checkpoint is saved
    killed, killed_cfg = workdir(tmp_path, "killed")
    last = out_dir(killed) / "checkpoints" / "last.pt"
    process = subprocess.Popen(snakemake(repo_root, killed, killed_cfg), cwd=repo_root, env=tool_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while process.poll() is None and not last.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = descendants(process.pid)
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
    while any(alive(pid) for pid in tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in tree), "a rank outlived the kill"
    stopped = read_checkpoint(last)["step"]
    assert 0 < stopped < STEPS, "the kill should land between the first checkpoint and the end"

    run(snakemake(repo_root, killed, killed_cfg, "--unlock"), repo_root)
    run(snakemake(repo_root, killed, killed_cfg, "--rerun-incomplete"), repo_root)
    resumed = json.loads((out_dir(killed) / "metrics.json").read_text())
    assert resumed["resumed_from"] == stopped and resumed["step"] == STEPS and resumed["world_size"] == 2
    resumed_ckpt, resumed_digest = checkpoint_digest(out_dir(killed))
    assert resumed["weights_sha256_per_rank"] == [resumed_digest, resumed_digest]
    assert_bitwise(resumed_ckpt["model"], ckpt["model"])
    assert resumed_digest == digest and resumed["losses"] == metrics["losses"]
    assert_bitwise(torch.load(out_dir(killed) / "encoder.pt", weights_only=True)["model"],
                   torch.load(out_dir(straight) / "encoder.pt", weights_only=True)["model"])
