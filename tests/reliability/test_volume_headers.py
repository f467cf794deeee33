"""NIfTI header sanity at the door: offsets and the claimed size are checked against the file before any
voxel is allocated (real nibabel-written files, edited the way broken writers leave them)."""
from __future__ import annotations

import gzip
import io
import tracemalloc

import nibabel as nib
import numpy as np
import pytest

from simcrop.data.quarantine import BadVolume
from simcrop.data.volume_io import load_nifti, load_volume

HUGE = (1800, 1800, 1000)                       # int16: 6.48 GB of voxels


def _peak_bytes(fn) -> tuple[BaseException | None, int]:
    """(the exception `fn` raised, peak bytes Python and numpy allocated while it ran)."""
    tracemalloc.start()
    try:
        fn()
        error = None
    except BaseException as err:               # noqa: BLE001 - returned to the test
        error = err
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, peak


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
def test_vox_offset_zero_is_rejected_not_read_as_voxels(tmp_path, name):
    array = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4) - 1000
    image = nib.Nifti1Image(array, np.eye(4))
    data = bytearray(image.to_bytes())                       # header (348) + 4 + voxels at 352
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(bytes(data[:348])))
    header["vox_offset"] = 0                                  # what some writers leave
    data[:348] = header.binaryblock
    (tmp_path / name).write_bytes(gzip.compress(bytes(data)) if name.endswith(".gz") else bytes(data))
    # before: the 352 header bytes were returned as the first voxels
    with pytest.raises(BadVolume, match=r"bad header: vox_offset 0 < 352 in a single-file NIfTI \(the header "
                                        r"bytes would be read as voxels\)") as err:
        load_nifti(tmp_path / name)
    assert err.value.path == str(tmp_path / name)


def _nifti2_header_only(shape) -> bytes:
    header = nib.Nifti2Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 544
    return header.binaryblock + b"\0" * 4


def test_tiny_gzip_nifti2_claiming_gigabytes_is_rejected_before_allocating(tmp_path):
    path = tmp_path / "claim.nii.gz"
    path.write_bytes(gzip.compress(_nifti2_header_only(HUGE), 9, mtime=0))
    assert path.stat().st_size < 100
    error, peak = _peak_bytes(lambda: load_volume(path, "nifti"))
    # before: nibabel allocated the 6.48 GB (peak 13 GB traced) and then found 0 bytes of voxels
    assert isinstance(error, BadVolume), error
    assert error.reason.startswith("bad header: claims 1800x1800x1000 int16 voxels at offset 544 "
                                   "(6480000544 bytes), but a ")
    assert "-byte gzip file inflates to at most" in error.reason
    assert peak < 20e6, f"{peak / 1e9:.2f} GB allocated for a {path.stat().st_size}-byte file"


def test_uncompressed_nifti2_claiming_gigabytes_is_rejected_before_allocating(tmp_path):
    path = tmp_path / "claim.nii"
    path.write_bytes(_nifti2_header_only(HUGE))
    error, peak = _peak_bytes(lambda: load_volume(path, "nifti"))
    assert isinstance(error, BadVolume), error
    assert error.reason == ("unreadable: truncated file, 544 bytes of 6480000544 "
                            "(header claims 1800x1800x1000 int16 voxels at offset 544)")
    assert peak < 20e6


def test_analyze_style_pair_claiming_more_than_its_image_file(tmp_path):
    """Pairs (.hdr + .img) go through nibabel: the claim is checked against the .img file first."""
    pair = nib.Nifti1Pair(np.zeros((4, 4, 4), np.int16), np.eye(4))
    nib.save(pair, tmp_path / "p.img")
    header = nib.load(tmp_path / "p.hdr").header.copy()
    header.set_data_shape(HUGE)
    (tmp_path / "p.hdr").write_bytes(header.binaryblock + b"\0" * 4)
    error, peak = _peak_bytes(lambda: load_nifti(tmp_path / "p.img"))
    assert isinstance(error, BadVolume) and error.reason.startswith("unreadable: truncated file, 128 bytes"), error
    assert peak < 20e6


def test_nifti2_single_file_reads_like_nibabel(tmp_path):
    array = np.random.default_rng(0).integers(-1000, 1000, size=(9, 8, 7)).astype(np.int16)
    affine = np.diag([-0.7, 0.8, 2.5, 1.0])
    for name in ("v2.nii", "v2.nii.gz"):
        nib.save(nib.Nifti2Image(array, affine), tmp_path / name)
        volume = load_nifti(tmp_path / name)
        np.testing.assert_array_equal(volume.array, array)
        np.testing.assert_allclose(volume.affine, affine)


def test_truncated_gzip_body_is_still_unreadable(tmp_path):
    """A real header with half its gzip stream gone: caught by the one decompression, not allocated."""
    path = tmp_path / "t.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((40, 40, 40), np.int16), np.eye(4)), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(BadVolume, match="unreadable"):
        load_nifti(path)


def test_real_files_pass_the_header_checks(shared_data):
    for name in ("cip_TestInput_chestct_64x64x50.nii.gz", "cip_copdgene10002K_insp_ct64.nii.gz"):
        path = shared_data / "ct" / name
        volume = load_nifti(path)
        assert volume.array.shape == nib.load(path).shape
        np.testing.assert_array_equal(volume.array, np.asanyarray(nib.load(path).dataobj))
