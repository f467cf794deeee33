import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# A handful of small volumes: enough for two preprocessing shards, a val split and a montage; then the
# experiment on two rows, two downstream sets (one probed, one segmented) and two probe fractions.
TINY_CONFIG = {
    "run": "tiny",
    "synthesize": {"n_patients": 5, "max_scans": 1, "max_reconstructions": 2, "workers": 1, "seed": 3,
                   "downstream_cases": 6},
    "preprocess": {"spacing": [6.0, 6.0, 10.0], "shard_size": 3},
    "data": {"val_fraction": 0.25},
    "show": {"n_cases": 2},
    # A few steps of a very small model: this checks the wiring, not the learning (tests/model does that).
    "model": {"img_size": [48, 48, 24], "patch_size": [16, 16, 8], "topk": 2, "decoder_depth": 1,
              "text_decoder_layers": 1, "text_max_tokens": 128},
    "pretrain": {"steps": 3, "batch_size": 2, "num_workers": 0, "checkpoint_every": 2, "log_every": 1,
                 "warmup_steps": 1},
    "experiment": {"objectives": ["random", "simcrop"], "tasks": ["probe", "grounding"],
                   "downstream": ["ccccii", "luna16"]},
    "probe": {"fractions": [0.5, 1.0], "steps": 20, "batch_size": 4},
    "segment": {"fractions": [1.0], "steps": 2, "eval_every": 2, "crop": [48, 48, 24], "feature_size": 4,
                "overlap": 0.0, "max_eval_volumes": 1},
}


def tool_env() -> dict:
    """PATH with this interpreter's bin first, so rules find `simcrop` and DVC finds `snakemake`."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def _run_tool(args, cwd, check=True):
    result = subprocess.run(args, cwd=cwd, env=tool_env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in Path(cwd).rglob("logs/**/*.log"))
        pytest.fail(f"{' '.join(map(str, args))} exited {result.returncode}\n{result.stdout[-4000:]}\n"
                    f"{result.stderr[-4000:]}\n{logs}")
    return result


@pytest.fixture
def tiny_config_file(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_CONFIG))
    return path


@pytest.fixture
def run_tool():
    return _run_tool


@pytest.fixture
def tiny_config() -> dict:
    return yaml.safe_load(yaml.safe_dump(TINY_CONFIG))
