"""Start a `simcrop` command (pre-training) as gpus_per_node x nodes DDP processes: what the pretrain rule runs.

    python -m simcrop.train.launch --gpus-per-node 4 --nodes 1 -- pretrain --set-json ... --out-dir ...

One process in all: the command itself (`python -m simcrop.cli ...`). Several on one node: `torchrun
--standalone` (a free local rendezvous port, so two jobs on one machine do not collide). Several nodes:
inside a SLURM allocation, `srun` starts one torchrun per node (--ntasks-per-node 1), which meet at a c10d
rendezvous on the allocation's first node (`scontrol show hostnames $SLURM_JOB_NODELIST`), at port
29500 + SLURM_JOB_ID mod 10000 unless --port is given, with the job id as rendezvous id. torchrun sets
RANK, LOCAL_RANK and WORLD_SIZE; simcrop.train.distributed joins the group: NCCL, one GPU per local rank,
when CUDA is available, else gloo on the CPU (what the tests use). The launcher then replaces itself
with that command (exec), so signals (SIGTERM from SLURM or Snakemake) reach torchrun, which forwards
them to every rank; the trainer saves a checkpoint at the same step on all of them.

The SLURM job must hold the resources: the pretrain rule asks for `nodes`, `gres: gpu:<gpus_per_node>`
and one task per node from the same config keys (workflow/rules/pretrain.smk).
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import subprocess
import sys
from typing import Callable, Mapping, Sequence

log = logging.getLogger("simcrop.train.launch")

BASE_PORT = 29500


class LaunchError(RuntimeError):
    """The requested processes cannot be started here; the message says why and what to do."""


def expand_first_host(nodelist: str) -> str:
    """First host of a SLURM node list without scontrol: 'gpu[003-004,9],cpu1' -> 'gpu003'."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        raise LaunchError(f"cannot read the SLURM node list {nodelist!r}")
    prefix, ranges = match.groups()
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def head_node(env: Mapping[str, str], run: Callable = subprocess.run) -> str:
    """The allocation's first node, where the c10d rendezvous is hosted."""
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise LaunchError("SLURM_JOB_NODELIST is not set: cannot tell the nodes of the allocation")
    try:
        out = run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30)
        hosts = out.stdout.split() if out.returncode == 0 else []
    except (OSError, subprocess.SubprocessError):
        hosts = []
    return hosts[0] if hosts else expand_first_host(nodelist)


def rendezvous_port(env: Mapping[str, str], port: int | None = None) -> int:
    if port:
        return int(port)
    return BASE_PORT + int(env.get("SLURM_JOB_ID", "0") or 0) % 10000


def build_command(simcrop_args: Sequence[str], gpus_per_node: int = 1, nodes: int = 1, *,
                  env: Mapping[str, str] | None = None, python: str | None = None, port: int | None = None,
                  run: Callable = subprocess.run) -> list[str]:
    """The command line that runs `simcrop <simcrop_args>` as gpus_per_node x nodes processes."""
    env = os.environ if env is None else env
    python = python or sys.executable
    gpus_per_node, nodes = int(gpus_per_node), int(nodes)
    if gpus_per_node < 1 or nodes < 1:
        raise LaunchError(f"gpus_per_node ({gpus_per_node}) and nodes ({nodes}) must be at least 1")
    if not simcrop_args:
        raise LaunchError("no simcrop command given (e.g. `-- pretrain --set-json ...`)")
    command = ["-m", "simcrop.cli", *simcrop_args]
    if gpus_per_node * nodes == 1:
        return [python, *command]
    torchrun = [python, "-m", "torch.distributed.run", "--nproc-per-node", str(gpus_per_node)]
    if nodes == 1:
        return [*torchrun[:3], "--standalone", "--nnodes", "1", *torchrun[3:], *command]
    job = env.get("SLURM_JOB_ID")
    if not job:
        raise LaunchError(f"pretrain.nodes is {nodes}: several nodes need a SLURM allocation (run Snakemake with "
                          "--profile config/profiles/slurm, whose pretrain jobs ask for the nodes), not SLURM_JOB_ID "
                          "unset; on one machine use pretrain.nodes: 1")
    have = int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 0)
    if have and have < nodes:
        raise LaunchError(f"pretrain.nodes is {nodes} but SLURM job {job} holds {have} node(s)")
    srun = ["srun", "--nodes", str(nodes), "--ntasks", str(nodes), "--ntasks-per-node", "1", "--kill-on-bad-exit=1"]
    if env.get("SLURM_CPUS_PER_TASK"):          # srun does not inherit it from the job on every SLURM version
        srun += ["--cpus-per-task", env["SLURM_CPUS_PER_TASK"]]
    endpoint = f"{head_node(env, run)}:{rendezvous_port(env, port)}"
    return [*srun, *torchrun, "--nnodes", str(nodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
            "--rdzv-id", f"simcrop-{job}", *command]


def check_devices(gpus_per_node: int) -> str:
    """One line on what the processes will run on; LaunchError when CUDA has fewer GPUs than asked for."""
    import torch

    if not torch.cuda.is_available():
        return f"no CUDA device: {gpus_per_node} CPU process(es) per node, gloo"
    count = torch.cuda.device_count()
    if count < gpus_per_node:
        raise LaunchError(f"pretrain.gpus_per_node is {gpus_per_node} but {count} GPU(s) are visible here "
                          f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')})")
    return f"{gpus_per_node} of {count} GPU(s) per node, NCCL"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simcrop.train.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus-per-node", type=int, default=1, help="processes per node (pretrain.gpus_per_node)")
    parser.add_argument("--nodes", type=int, default=1, help="nodes (pretrain.nodes); > 1 needs SLURM")
    parser.add_argument("--port", type=int, default=None, help="rendezvous port across nodes "
                                                               f"(default {BASE_PORT} + SLURM_JOB_ID mod 10000)")
    parser.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    parser.add_argument("simcrop_args", nargs=argparse.REMAINDER, help="-- then the simcrop command and its arguments")
    args = parser.parse_args(argv)
    simcrop_args = args.simcrop_args[1:] if args.simcrop_args[:1] == ["--"] else args.simcrop_args
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        command = build_command(simcrop_args, args.gpus_per_node, args.nodes, port=args.port)
        if args.dry_run:
            print(shlex.join(command))
            return 0
        if args.gpus_per_node * args.nodes > 1:
            log.info("%d process(es) on %d node(s): %s", args.gpus_per_node * args.nodes, args.nodes,
                     check_devices(args.gpus_per_node))
    except LaunchError as err:
        log.error("%s", err)
        return 2
    log.info("running %s", shlex.join(command))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(command[0], command)
    return 0   # not reached


if __name__ == "__main__":
    sys.exit(main())
