"""Temporary files a killed job leaves (`.<name>.<random>.tmp<suffix>`): removed when the job that owns
them starts again, never another running job's, ignored by the adapters, and kept out of DVC."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from simcrop.config import DataConfig, PreprocessConfig
from simcrop.data.adapters.ctrate import read_ctrate
from simcrop.data.adapters.radchestct import read_radchestct
from simcrop.data.ingest import ingest
from simcrop.data.manifest import empty_row, write_manifest
from simcrop.data.preprocess import gather_shards, preprocess_shard
from simcrop.data.quarantine import QUARANTINE_COLUMNS
from simcrop.data.synthetic.downstream import write_radchestct
import simcrop.io as simcrop_io
from simcrop.io import atomic_path

from ctrate_tree import write_ctrate_tree


def leftover(target: Path, content: bytes = b"half") -> Path:
    """What SIGKILL inside `atomic_path(target)` leaves: its temporary file, named as atomic_path names it."""
    suffix = "".join(target.suffixes[-2:]) if target.name.endswith(".nii.gz") else target.suffix
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.write(fd, content)
    os.close(fd)
    return Path(name)


# atomic_path's names spelled out, so the tests below also run against code without simcrop.io.is_temp_file
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)*$")


def temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if TEMP_NAME.match(p.name))


@pytest.mark.parametrize("name", ["v.nii.gz", "qc.csv", "ingest_report.json", "encoder.pt", "noext"])
def test_atomic_path_names_are_recognised(tmp_path, name):
    is_temp_file, temp_target = simcrop_io.is_temp_file, simcrop_io.temp_target
    with atomic_path(tmp_path / name) as tmp:
        assert is_temp_file(tmp) and temp_target(tmp.name) == name
        assert leftover(tmp_path / name).name != tmp.name and temp_target(leftover(tmp_path / name).name) == name
    for plain in (name, ".hidden", f".{name}.tmp", "a.tmp.csv", f"{name}.abcd1234.tmp"):
        assert not is_temp_file(tmp_path / plain), plain


def test_remove_only_the_named_targets(tmp_path):
    remove_stale_temp_files = simcrop_io.remove_stale_temp_files
    mine, theirs = leftover(tmp_path / "a.json"), leftover(tmp_path / "b.json")
    (tmp_path / "a.json").write_text("{}")
    assert remove_stale_temp_files(tmp_path, ["a.json"]) == [mine]
    assert theirs.exists() and (tmp_path / "a.json").exists()
    assert remove_stale_temp_files(tmp_path) == [theirs]
    assert remove_stale_temp_files(tmp_path / "missing") == []


def _manifest(tmp_path, n=4) -> Path:
    data = np.full((16, 16, 8), -1000, np.int16)
    data[4:12, 4:12, :] = 40
    rows = []
    for i in range(n):
        nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 4.0, 1.0])), tmp_path / f"v{i}.nii.gz")
        row = empty_row()
        row.update(volume_id=f"v{i}", patient_id=f"p{i}", scan_id=f"v{i}", split="train",
                   image=str(tmp_path / f"v{i}.nii.gz"), format="nifti", source="test")
        rows.append(row)
    write_manifest(tmp_path / "manifest.csv", rows)
    return tmp_path / "manifest.csv"


def test_shard_removes_its_own_stale_temp_files_and_no_other_shards(tmp_path):
    manifest, out = _manifest(tmp_path), tmp_path / "pre"
    mine = [leftover(out / "volumes" / "v0.nii.gz"), leftover(out / "qc" / "v1.json"),
            leftover(out / "masks" / "v0.lesion.nii.gz"), leftover(out / "shards" / "00000.qc.csv")]
    # shard 1 (v2, v3) may be writing into the same folders right now: its temporary files stay
    theirs = [leftover(out / "volumes" / "v2.nii.gz"), leftover(out / "shards" / "00001.quarantine.csv")]
    done = preprocess_shard(manifest, 0, out, PreprocessConfig(spacing=[4.0, 4.0, 8.0], shard_size=2),
                            progress=False)
    assert done["ok"] == 2
    assert not any(p.exists() for p in mine)
    assert temp_files(out) == sorted(theirs)


def test_ingest_and_gather_remove_their_own_temp_files(tmp_path):
    root = write_ctrate_tree(tmp_path / "ct", "v2")
    run = tmp_path / "run"
    mine = [leftover(run / "manifest.csv"), leftover(run / "ingest_report.json")]
    theirs = leftover(run / "sentences.jsonl")              # the sentences job writes beside them
    ingest(DataConfig(dataset="ctrate", root=str(root)), run / "manifest.csv", run / "ingest_report.json")
    assert not any(p.exists() for p in mine) and theirs.exists()

    qc, quarantine = run / "shards" / "0.qc.csv", run / "shards" / "0.quarantine.csv"
    qc.parent.mkdir()
    pd.DataFrame(columns=["volume_id", "resumed"]).to_csv(qc, index=False)
    pd.DataFrame(columns=QUARANTINE_COLUMNS).to_csv(quarantine, index=False)
    mine = [leftover(run / "qc.csv"), leftover(run / "quarantine.csv"), leftover(run / "preprocess_summary.json")]
    gather_shards([qc], [quarantine], run / "qc.csv", run / "quarantine.csv", run / "preprocess_summary.json",
                  max_bad_fraction=0.5)
    assert not any(p.exists() for p in mine) and temp_files(run) == [theirs]


def test_ctrate_adapter_ignores_temp_and_hidden_files(tmp_path):
    root = write_ctrate_tree(tmp_path / "ct", "v2")
    rows, stats = read_ctrate(root)
    volume = next(root.glob("train_fixed/*/*/*.nii.gz"))
    shutil.copy(volume, leftover(volume))                     # a killed synthesize's half-written copy
    shutil.copy(volume, volume.with_name("._" + volume.name))  # macOS metadata beside the volume
    rows_again, stats_again = read_ctrate(root)
    assert [r["volume_id"] for r in rows_again] == [r["volume_id"] for r in rows]
    assert stats_again["found"] == stats["found"] and stats_again["skipped"] == stats["skipped"]


def test_radchestct_adapter_ignores_temp_files(tmp_path):
    write_radchestct(tmp_path, seed=0, n_cases=3)
    volume = next((tmp_path / "volumes").glob("*.npz"))
    shutil.copy(volume, leftover(volume))
    rows, stats = read_radchestct(tmp_path)
    assert len(rows) == 3 and stats["found"] == 3 and stats["skipped"] == []


def test_dvc_ignores_temp_files(repo_root, tmp_path):
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc")
    if dvc is None:
        pytest.skip("dvc not installed")
    shutil.copy(repo_root / ".dvcignore", tmp_path / ".dvcignore")
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True, capture_output=True)
    folder = tmp_path / "results" / "run" / "preprocessed" / "volumes"
    temps = [leftover(folder / "v1.nii.gz"), leftover(folder.parent / "qc" / "v1.json"),
             leftover(folder.parent.parent / "manifest.csv")]
    plain = [folder / "v1.nii.gz", folder / "v.tmp.nii.gz", folder.parent / "qc" / "v1.json"]
    for path in plain:
        path.write_bytes(b"x")
    names = [str(p.relative_to(tmp_path)) for p in temps + plain]
    result = subprocess.run([dvc, "check-ignore", *names], cwd=tmp_path, capture_output=True, text=True)
    ignored = set(result.stdout.split())
    assert ignored == {str(p.relative_to(tmp_path)) for p in temps}, result.stdout + result.stderr
