import os

import pytest

from simcrop.io import atomic_path, write_json_atomic


def test_atomic_path_renames_only_on_success(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text().strip().startswith("{") and "half" not in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"], "temporary file left behind"


def test_outputs_get_the_umask_mode_not_0600(tmp_path):
    umask = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "x.json", {})
    finally:
        os.umask(umask)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644


def test_nifti_suffix_is_kept_for_writers(tmp_path):
    with atomic_path(tmp_path / "v.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"x")
    assert (tmp_path / "v.nii.gz").exists()
