"""simcrop.train.launch: the command line the pretrain rule runs for gpus_per_node x nodes processes."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from simcrop.config import from_dict
from simcrop.train import launch
from simcrop.train.launch import LaunchError, build_command
from simcrop.train.provenance import NOT_TRAINING, changed_settings

ARGS = ["pretrain", "--set-json", '{"a": 1}', "--out-dir", "out", "--quiet"]
SLURM = {"SLURM_JOB_ID": "123456", "SLURM_JOB_NODELIST": "gpu[007-008]", "SLURM_JOB_NUM_NODES": "2",
         "SLURM_CPUS_PER_TASK": "64"}


def scontrol(hosts):
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        return SimpleNamespace(returncode=0, stdout="\n".join(hosts) + "\n")
    run.calls = calls
    return run


def test_one_process_is_the_command_itself():
    assert build_command(ARGS, 1, 1, env={}, python="py") == ["py", "-m", "simcrop.cli", *ARGS]


def test_one_node_uses_standalone_torchrun():
    cmd = build_command(ARGS, 4, 1, env=SLURM, python="py")       # in SLURM or not: no srun on one node
    assert cmd == ["py", "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", "4",
                   "-m", "simcrop.cli", *ARGS]


def test_nodes_use_srun_one_torchrun_per_node_and_a_slurm_rendezvous():
    run = scontrol(["gpu007", "gpu008"])
    cmd = build_command(ARGS, 4, 2, env=SLURM, python="py", run=run)
    assert run.calls == [["scontrol", "show", "hostnames", "gpu[007-008]"]]
    srun, torchrun = cmd[:cmd.index("py")], cmd[cmd.index("py"):]
    assert srun == ["srun", "--nodes", "2", "--ntasks", "2", "--ntasks-per-node", "1", "--kill-on-bad-exit=1",
                    "--cpus-per-task", "64"]
    assert torchrun == ["py", "-m", "torch.distributed.run", "--nproc-per-node", "4", "--nnodes", "2",
                        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"gpu007:{29500 + 123456 % 10000}",
                        "--rdzv-id", "simcrop-123456", "-m", "simcrop.cli", *ARGS]
    assert "gpu007:4242" in build_command(ARGS, 4, 2, env=SLURM, python="py", run=run, port=4242)


def test_head_node_without_scontrol_reads_the_node_list():
    def missing(cmd, **kw):
        raise FileNotFoundError("scontrol")
    assert launch.head_node({"SLURM_JOB_NODELIST": "gpu[003-004,9],cpu1"}, run=missing) == "gpu003"
    assert launch.expand_first_host("node17,node18") == "node17"
    assert launch.expand_first_host("a[1-2]") == "a1"


@pytest.mark.parametrize("env, message", [
    ({}, "need a SLURM allocation"),
    ({**SLURM, "SLURM_JOB_NUM_NODES": "1"}, "holds 1 node"),
])
def test_several_nodes_need_a_matching_allocation(env, message):
    with pytest.raises(LaunchError, match=message):
        build_command(ARGS, 2, 2, env=env, python="py", run=scontrol(["n1"]))


@pytest.mark.parametrize("gpus, nodes, args", [(0, 1, ARGS), (1, 0, ARGS), (2, 1, [])])
def test_bad_requests_are_refused(gpus, nodes, args):
    with pytest.raises(LaunchError):
        build_command(args, gpus, nodes, env={}, python="py")


def test_cli_dry_run_and_errors():
    dry = subprocess.run([sys.executable, "-m", "simcrop.train.launch", "--gpus-per-node", "2", "--dry-run", "--",
                          *ARGS], capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert "torch.distributed.run --standalone --nnodes 1 --nproc-per-node 2 -m simcrop.cli pretrain" in dry.stdout
    bad = subprocess.run([sys.executable, "-m", "simcrop.train.launch", "--nodes", "2", "--", *ARGS],
                         capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert bad.returncode == 2 and "SLURM allocation" in bad.stderr


def test_cli_runs_the_simcrop_command():
    done = subprocess.run([sys.executable, "-m", "simcrop.train.launch", "--", "config", "--set-json",
                           '{"pretrain": {"gpus_per_node": 3}}'], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "gpus_per_node: 3" in done.stdout


def test_config_keys_and_provenance():
    cfg = from_dict({"pretrain": {"gpus_per_node": 4, "nodes": 2}})
    assert (cfg.pretrain.gpus_per_node, cfg.pretrain.nodes) == (4, 2)
    assert (from_dict({}).pretrain.gpus_per_node, from_dict({}).pretrain.nodes) == (1, 1)
    # how the processes are started is not compared; how many there are is
    assert {"pretrain.gpus_per_node", "pretrain.nodes"} <= NOT_TRAINING
    one_by_four = {"pretrain": {"gpus_per_node": 4, "nodes": 1}}
    two_by_two = {"pretrain": {"gpus_per_node": 2, "nodes": 2}}
    assert changed_settings(one_by_four, two_by_two, saved_world=4, current_world=4) == []
    changes = changed_settings(one_by_four, {"pretrain": {"gpus_per_node": 1, "nodes": 1}}, saved_world=4,
                               current_world=1)
    assert len(changes) == 1 and changes[0].startswith("world size: 4 -> 1 processes")
    assert changed_settings({}, {}, saved_world=None, current_world=2) == []    # unknown: not compared
