"""Volume ids become output file names: an id that would leave its folder is rejected, naming the row."""
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from simcrop.config import DataConfig, PreprocessConfig
from simcrop.data.ingest import ingest
from simcrop.data.manifest import MANIFEST_COLUMNS, ManifestError, empty_row, read_manifest
from simcrop.data.preprocess import output_paths, preprocess_shard


def _ct(path):
    data = np.random.default_rng(0).integers(-1000, 400, (16, 16, 8)).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 4.0, 1.0])), path)
    return path


def _manifest(path, ids, image):
    """A prebuilt manifest as a user might hand one over (written with pandas, not validated)."""
    rows = []
    for volume_id in ids:
        row = empty_row()
        row.update(volume_id=volume_id, patient_id=f"p_{len(rows)}", scan_id=f"s_{len(rows)}", split="train",
                   image=str(image), format="nifti", source="manifest")
        rows.append(row)
    pd.DataFrame(rows, columns=MANIFEST_COLUMNS).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("bad", ["../escape", "a/b", "..", "sub\\x", ".hidden", ""])
def test_unsafe_id_in_a_prebuilt_manifest_names_the_row(tmp_path, bad):
    manifest = _manifest(tmp_path / "users.csv", ["case_1", bad], _ct(tmp_path / "ct.nii.gz"))
    with pytest.raises(ManifestError, match=r"users\.csv: row 2: volume_id") as err:
        read_manifest(manifest)
    assert repr(bad) in str(err.value) and "output file names" in str(err.value)
    with pytest.raises(ManifestError, match="row 2"):
        ingest(DataConfig(dataset="manifest", root=str(manifest)), tmp_path / "run" / "manifest.csv",
               tmp_path / "run" / "ingest_report.json")
    assert not (tmp_path / "run" / "manifest.csv").exists()


def test_plain_ids_with_dots_and_dashes_are_fine(tmp_path):
    manifest = _manifest(tmp_path / "m.csv", ["case-1.2", "a..b", "x_y"], _ct(tmp_path / "ct.nii.gz"))
    assert list(read_manifest(manifest)["volume_id"]) == ["case-1.2", "a..b", "x_y"]


def test_preprocessing_never_writes_outside_its_folder(tmp_path):
    manifest = _manifest(tmp_path / "m.csv", ["../../escaped"], _ct(tmp_path / "ct.nii.gz"))
    out = tmp_path / "deep" / "run" / "preprocessed"
    with pytest.raises(ManifestError, match="escaped"):
        preprocess_shard(manifest, 0, out, PreprocessConfig(spacing=[4.0, 4.0, 8.0]))
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert sorted(p.name for p in written) == ["ct.nii.gz", "m.csv"]
    with pytest.raises(ManifestError, match="path separator"):
        output_paths(out, "../x")


def test_cli_prints_one_line_and_fails(tmp_path):
    manifest = _manifest(tmp_path / "users.csv", ["../escape"], _ct(tmp_path / "ct.nii.gz"))
    result = subprocess.run([sys.executable, "-m", "simcrop.cli", "ingest", "--set-json",
                             f'{{"data": {{"dataset": "manifest", "root": "{manifest}"}}}}',
                             "--manifest", str(tmp_path / "run" / "manifest.csv")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "users.csv: row 1: volume_id '../escape'" in errors[0]
