"""Loaders: ITK LPS geometry → RAS affine, npz and metadata conventions, fast NIfTI reader."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from simcrop.data.quarantine import BadVolume
from simcrop.data.volume_io import load_nifti, load_volume, metadata_affine, write_nifti


def test_mhd_affine_maps_voxels_like_itk(tmp_path):
    array = np.arange(5 * 6 * 7, dtype=np.int16).reshape(7, 6, 5)         # ITK order (z, y, x)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.9, 2.5))
    image.SetOrigin((-10.0, 20.0, 30.0))
    image.SetDirection((0, 1, 0, -1, 0, 0, 0, 0, 1))                      # axes swapped and flipped
    path = tmp_path / "v.mhd"
    sitk.WriteImage(image, str(path))
    volume = load_volume(path, "mhd")
    assert volume.array.shape == (5, 6, 7)
    for index in [(0, 0, 0), (4, 5, 6), (1, 3, 2)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(index))
        ras = volume.affine @ np.append(index, 1.0)
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-9)
        assert volume.array[index] == array[index[2], index[1], index[0]]


def test_real_dicom_geometry_matches_itk(shared_data):
    folder = shared_data / "dicom" / "lungpetctdx_A0002_B40f"
    volume = load_volume(folder, "dicom")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    corner = np.array(image.TransformIndexToPhysicalPoint((511, 511, 29))) * [-1, -1, 1]
    np.testing.assert_allclose(volume.affine @ [511, 511, 29, 1], np.append(corner, 1), atol=1e-6)
    assert volume.orientation == "LPS" and volume.array.dtype == np.int16
    assert volume.array.min() == -1024                                       # already HU


def test_npz_is_a_slice_stack_with_metadata_spacing(tmp_path):
    stack = np.random.default_rng(0).integers(-1000, 500, size=(9, 8, 7)).astype(np.int16)   # (Z, Y, X)
    np.savez_compressed(tmp_path / "v.npz", ct=stack)
    volume = load_volume(tmp_path / "v.npz", "npz", spacing=(0.8, 0.8, 1.0))
    assert volume.array.shape == (7, 8, 9) and volume.array[6, 2, 1] == stack[1, 2, 6]
    np.testing.assert_allclose(volume.affine, metadata_affine((0.8, 0.8, 1.0)))
    with pytest.raises(BadVolume, match="spacing"):
        load_volume(tmp_path / "v.npz", "npz")


def test_fast_nifti_reader_agrees_with_nibabel(tmp_path):
    array = np.random.default_rng(0).integers(-1000, 1000, size=(9, 8, 7)).astype(">i2")   # big-endian
    image = nib.Nifti1Image(array, np.diag([-1.0, 2.0, 3.0, 1.0]))
    nib.save(image, tmp_path / "v.nii.gz")
    volume = load_nifti(tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.affine, image.affine)
    scaled = nib.Nifti1Image(array.astype(np.int16), np.eye(4))
    scaled.header.set_slope_inter(2.0, -5.0)
    nib.save(scaled, tmp_path / "s.nii")
    np.testing.assert_allclose(load_nifti(tmp_path / "s.nii").array, array * 2.0 - 5.0)


def test_write_nifti_round_trip(tmp_path):
    array = np.random.default_rng(0).integers(-1000, 1000, size=(5, 4, 3)).astype(np.int16)
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    affine[:3, 3] = [-7.0, 3.0, 11.0]
    write_nifti(tmp_path / "o.nii.gz", array, affine, compress_level=1)
    image = nib.load(tmp_path / "o.nii.gz")
    np.testing.assert_array_equal(np.asanyarray(image.dataobj), array)
    np.testing.assert_allclose(image.affine, affine)
    assert image.get_data_dtype() == np.int16 and list(tmp_path.iterdir()) == [tmp_path / "o.nii.gz"]


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(BadVolume, match="unknown format"):
        load_volume(tmp_path / "x", "png")
    with pytest.raises(BadVolume, match="file not found"):
        load_volume(tmp_path / "missing.nii.gz", "nifti")


def test_slice_position_check_names_the_gap():
    from simcrop.data.volume_io import check_slice_positions

    files = [f"/x/s{i}.dcm" for i in range(6)]
    check_slice_positions(np.array([0, 2.5, 5, 7.5, 10, 12.5]), files, "/x")            # even: fine
    check_slice_positions(np.array([12.5, 10, 7.5, 5, 2.5, 0]), files, "/x")            # descending: fine
    check_slice_positions(np.array([0.0, 2.0]), files[:2], "/x")                        # too few to tell
    cases = {"missing slice: 5 mm gap between s2.dcm and s3.dcm": [0, 2.5, 5, 10, 12.5, 15],
             "duplicated slice: s1.dcm and s2.dcm": [0, 2.5, 2.5, 5, 7.5, 10],
             "uneven slices: gaps from 2 to 2.8 mm put s3.dcm 0.96 mm off": [0, 2, 4, 6, 8.8, 11.6]}
    for reason, positions in cases.items():
        with pytest.raises(BadVolume, match=reason):
            check_slice_positions(np.array(positions, float), files, "/x")


def test_choose_series_prefers_chest_ct_then_most_images():
    from simcrop.data.volume_io import BODY_PART, DESCRIPTION, IMAGE_TYPE, MODALITY, Series, choose_series

    def series(uid, n, **tags):
        names = {"modality": MODALITY, "body": BODY_PART, "desc": DESCRIPTION, "kind": IMAGE_TYPE}
        return Series(uid, tuple(f"{uid}_{i}.dcm" for i in range(n)), {names[k]: v for k, v in tags.items()})

    scout = series("1.1", 3, modality="CT", body="CHEST", kind="ORIGINAL\\PRIMARY\\LOCALIZER")
    abdomen = series("1.2", 300, modality="CT", body="ABDOMEN", desc="Abdomen 1.0")
    lung = series("1.3", 120, modality="CT", body="", desc="Thorax 1.0 B70f")
    soft = series("1.4", 120, modality="CT", body="", desc="THORAX 1.0 B30f")
    dose = series("1.5", 400, modality="SR")
    chosen, ignored = choose_series([scout, abdomen, soft, lung, dose])
    assert chosen is lung and {s.uid for s in ignored} == {"1.1", "1.2", "1.4", "1.5"}   # tie: lowest UID
    assert choose_series([scout, abdomen])[0] is abdomen                                  # no chest: most images
    assert choose_series([scout, dose]) == (None, [scout, dose])
    assert choose_series([scout]) == (scout, [])                                          # one series: as before
