"""Cluster-scale check: how long `snakemake -n` takes to build the DAG for a CT-RATE-sized manifest.

A manifest alone (50,000 rows, no images) goes through the `manifest` adapter; then the dry run of the
whole data target is timed. Goal: under a minute (shards, not one job per volume).
    python benchmarks/dag.py --volumes 50000 --shard-size 200
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def write_manifest(path: Path, n_volumes: int) -> None:
    from simcrop.data.manifest import empty_row, write_manifest as write

    rows = []
    for i in range(n_volumes):
        patient = i // 2 + 1
        row = empty_row()
        row.update(volume_id=f"train_{patient}_a_{i % 2 + 1}", patient_id=f"train_{patient}",
                   scan_id=f"train_{patient}_a", split="train", image=f"/nonexistent/{i}.nii.gz",
                   format="nifti", source="ctrate", release="v2", findings="No nodule.")
        rows.append(row)
    write(path, rows)


def run(cmd: list[str], cwd: Path) -> float:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volumes", type=int, default=50_000)
    parser.add_argument("--shard-size", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="simcrop-dag-") as tmp:
        work = Path(tmp)
        manifest = work / "prebuilt_manifest.csv"
        write_manifest(manifest, args.volumes)
        config = {"run": "dag", "data": {"dataset": "manifest", "root": str(manifest)},
                  "preprocess": {"shard_size": args.shard_size}}
        (work / "dag.yaml").write_text(yaml.safe_dump(config))
        base = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"),
                "--directory", str(work), "--configfile", str(work / "dag.yaml"), "--cores", "1"]
        ingest_s = run(base + ["results/dag/manifest.csv"], REPO)
        dry_s = run(base + ["-n", "--quiet", "rules", "--", "data"], REPO)
    n_jobs = -(-args.volumes // args.shard_size)
    print(f"DAG: {args.volumes} volumes, shard_size {args.shard_size} -> {n_jobs} preprocess jobs")
    print(f"  ingest (manifest adapter)   {ingest_s:7.2f} s")
    print(f"  snakemake -n (whole DAG)    {dry_s:7.2f} s   goal < 60 s: {'PASS' if dry_s < 60 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
