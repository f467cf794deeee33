"""SIGKILL `simcrop preprocess` at random moments (and once in the middle of writing a volume), rerun it to
completion: every output equals an uninterrupted run's, and no temporary file is left behind."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from simcrop.data.manifest import empty_row, write_manifest

SEED = 13
# Small inputs, large-ish outputs (0.5 mm): each volume's write takes long enough to be killed inside it.
SETTINGS = json.dumps({"preprocess": {"spacing": [0.5, 0.5, 1.0], "shard_size": 10, "compress_level": 1}})
# Wall time and whether the volume was reused differ between runs by design; everything else must not.
RUN_BOOKKEEPING = ["seconds", "resumed"]
# simcrop.io.atomic_path's temporary names, `.<name>.<8 random>.tmp<suffix>`, spelled out here so this
# test also runs against code that predates simcrop.io.is_temp_file.
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)*$")


def is_temp_file(path) -> bool:
    return bool(TEMP_NAME.match(Path(path).name))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """Five chest-like volumes (one with a lesion mask) and one constant volume that is quarantined."""
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(SEED)
    affine = np.diag([-1.5, -1.5, 3.0, 1.0])
    rows = []
    for i in range(6):
        data = np.full((80, 80, 40), -1000, np.int16)
        if i != 5:
            data[10:-10, 10:-10, :] = rng.integers(-900, 300, size=(60, 60, 40))
        nib.save(nib.Nifti1Image(data, affine), folder / f"v{i}.nii.gz")
        row = empty_row()
        row.update(volume_id=f"v{i}", patient_id=f"p{i}", scan_id=f"v{i}", split="train",
                   image=str(folder / f"v{i}.nii.gz"), format="nifti", source="test")
        if i == 1:
            mask = np.zeros(data.shape, np.uint8)
            mask[30:50, 30:50, 10:30] = 2
            nib.save(nib.Nifti1Image(mask, affine), folder / "v1_lesion.nii.gz")
            row["lesion_mask"] = str(folder / "v1_lesion.nii.gz")
        rows.append(row)
    write_manifest(folder / "manifest.csv", rows)
    return folder / "manifest.csv"


def _start(manifest: Path, cwd: Path) -> subprocess.Popen:
    # a relative --out-dir keeps the output paths recorded in the QC tables equal between the two runs
    return subprocess.Popen([sys.executable, "-m", "simcrop.cli", "preprocess", "--set-json", SETTINGS,
                             "--manifest", str(manifest), "--shard", "0", "--out-dir", "pre", "--quiet"],
                            cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> None:
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]


def _temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if is_temp_file(p))


def _kill_after(process: subprocess.Popen, seconds: float) -> None:
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()


def _kill_while_writing(process: subprocess.Popen, volumes: Path) -> None:
    """SIGKILL as soon as a temporary file appears in `volumes`: the kill lands inside an atomic write."""
    while process.poll() is None:
        if volumes.is_dir() and any(is_temp_file(e.name) for e in os.scandir(volumes)):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.0002)
    process.wait()


def _content(path: Path):
    """Bytes of a data file; tables and sidecars without the per-run bookkeeping columns."""
    if path.suffix == ".json":
        record = json.loads(path.read_text())
        return {k: v for k, v in record.items() if k not in RUN_BOOKKEEPING}
    if path.suffix == ".csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        return frame.drop(columns=[c for c in RUN_BOOKKEEPING if c in frame.columns]).to_dict("records")
    return path.read_bytes()


def test_killed_and_rerun_equals_uninterrupted(manifest, tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir()
    killed.mkdir()
    start = time.monotonic()
    _finish(_start(manifest, reference))
    duration = time.monotonic() - start

    rng = random.Random(SEED)
    left_mid_write = []
    for round_ in ("write", "random", "random", "write", "random"):
        process = _start(manifest, killed)
        if round_ == "write":
            _kill_while_writing(process, killed / "pre" / "volumes")
            left_mid_write += _temp_files(killed / "pre")
        else:
            _kill_after(process, rng.uniform(0.2, 1.0) * duration)
    assert left_mid_write, "no kill landed inside a write: the test did not exercise a left temporary file"
    _finish(_start(manifest, killed))

    assert _temp_files(killed) == []
    files = sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(killed) for p in killed.rglob("*") if p.is_file())
    assert any(str(f).startswith("pre/masks/") for f in files) and len(files) > 10
    for name in files:
        assert _content(killed / name) == _content(reference / name), name
    quarantine = pd.read_csv(killed / "pre" / "shards" / "00000.quarantine.csv")
    assert list(quarantine["volume_id"]) == ["v5"]
