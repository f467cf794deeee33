"""simcrop.cli.data_commands: prepare and export-volume through `simcrop.cli.main`, exit codes and messages."""
from simcrop import cli


def test_prepare_of_an_unknown_downstream_set_exits_2(caplog):
    assert cli.main(["prepare", "--dataset", "nope"]) == 2
    assert "'nope' is not configured" in caplog.text


def test_export_volume_writes_a_cached_volume_as_nifti(tmp_path, caplog):
    """`simcrop export-volume <cached> <out.nii.gz>`: the .b2nd training cache → NIfTI with its affine, for
    3D Slicer / ITK-SNAP; a file that is no preprocessed volume fails in one line."""
    import nibabel as nib
    import numpy as np

    from simcrop.data.preprocessed_io import write_cache

    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    affine[:3, 3] = [-150.0, -140.0, -310.0]
    image = np.arange(12 * 10 * 6, dtype=np.int16).reshape(12, 10, 6) - 300
    write_cache(tmp_path / "v.b2nd", image, affine)
    assert cli.main(["export-volume", str(tmp_path / "v.b2nd"), str(tmp_path / "v.nii.gz")]) == 0
    out = nib.load(tmp_path / "v.nii.gz")
    assert np.array_equal(np.asanyarray(out.dataobj), image) and np.allclose(out.affine, affine)
    (tmp_path / "bad.b2nd").write_bytes(b"junk")
    assert cli.main(["export-volume", str(tmp_path / "bad.b2nd"), str(tmp_path / "bad.nii.gz")]) == 1
    assert "bad.b2nd: unreadable training cache" in caplog.text and not (tmp_path / "bad.nii.gz").exists()
    assert cli.main(["export-volume", str(tmp_path / "gone.b2nd"), str(tmp_path / "gone.nii.gz")]) == 1
