"""DICOM series at the door: uneven slice positions are quarantined with the gap named, and a folder holding
several series keeps its chest CT series (real SimpleITK/GDCM files, the real series copied to tmp)."""
from __future__ import annotations

import numpy as np
import pytest
from volume_door import chest_hu, copy_real_series, write_dicom_series

from simcrop.data.adapters.folder import find_volumes
from simcrop.data.quarantine import BadVolume
from simcrop.data.volume_io import load_volume


def test_missing_slice_in_the_real_series_is_named(shared_data, tmp_path):
    series = copy_real_series(shared_data, tmp_path / "series")
    (series / "1-15.dcm").unlink()
    # before: read as 29 uniform slices 8.29 mm apart (a warning in a log), anatomy displaced by ~4 mm
    with pytest.raises(BadVolume, match=r"missing slice: 16 mm gap between 1-16\.dcm and 1-14\.dcm .* 8 mm "
                                        r"apart, about 1 slice\(s\) missing") as err:
        load_volume(series, "dicom")
    assert err.value.path == str(series)


def test_duplicated_slice_in_the_real_series_is_named(shared_data, tmp_path):
    series = copy_real_series(shared_data, tmp_path / "series")
    (series / "1-15b.dcm").write_bytes((series / "1-15.dcm").read_bytes())
    with pytest.raises(BadVolume, match=r"duplicated slice: 1-15\.dcm and 1-15b\.dcm at the same position"):
        load_volume(series, "dicom")


def test_uneven_slices_are_named_and_small_jitter_is_not(tmp_path):
    hu = chest_hu(10)
    # 2 mm slices, then 2.8 mm ones: no gap is a whole missing slice, yet a uniform grid puts the
    # sixth slice 1.8 mm off
    uneven = [0, 2, 4, 6, 8, 10, 12.8, 15.6, 18.4, 21.2]
    write_dicom_series(tmp_path / "uneven", hu, uneven, "1.2.826.0.1.3680043.8.498.10")
    with pytest.raises(BadVolume, match=r"uneven slices: gaps from 2 to 2.8 mm put im005\.dcm 1.78 mm off"):
        load_volume(tmp_path / "uneven", "dicom")

    jitter = 2.0 * np.arange(10) + np.random.default_rng(0).uniform(-0.05, 0.05, 10)   # rounding in headers
    write_dicom_series(tmp_path / "jitter", hu, jitter, "1.2.826.0.1.3680043.8.498.11")
    volume = load_volume(tmp_path / "jitter", "dicom")
    assert volume.array.shape == (48, 48, 10)
    np.testing.assert_array_equal(volume.array, hu.transpose(2, 1, 0))


def test_head_first_series_with_a_gap_is_caught_too(tmp_path):
    """Descending positions (GDCM may sort either way): the check works on the gaps' magnitude."""
    positions = [30.0 - 3 * i for i in range(9)] + [30.0 - 3 * 10]
    write_dicom_series(tmp_path / "s", chest_hu(10), positions, "1.2.826.0.1.3680043.8.498.12")
    with pytest.raises(BadVolume, match=r"missing slice: 6 mm gap between im00[89]\.dcm and im00[89]\.dcm"):
        load_volume(tmp_path / "s", "dicom")


def _study_folder(shared_data, folder):
    """A PACS export folder: the real chest series, plus a topogram (localizer) and a longer abdomen series."""
    copy_real_series(shared_data, folder)
    write_dicom_series(folder, chest_hu(2, seed=1), [0.0, 0.0], "1.2.826.0.1.3680043.8.498.20",
                       description="Topogram 0.6 T20f", image_type="ORIGINAL\\PRIMARY\\LOCALIZER", prefix="top")
    write_dicom_series(folder, chest_hu(40, seed=2), [-400.0 + 2 * i for i in range(40)],
                       "1.2.826.0.1.3680043.8.498.21", description="Abdomen 2.0 B30f", body_part="ABDOMEN",
                       prefix="abd")
    return folder


def test_folder_with_several_series_keeps_the_chest_ct(shared_data, tmp_path):
    images = tmp_path / "images"
    folder = _study_folder(shared_data, images / "study1")
    volumes, stats = find_volumes(images)
    # before: the folder was dropped whole, its real chest CT included
    assert volumes == [("study1", folder, "dicom")]
    assert stats["multi_series_folders"] == 1
    ignored = [s["reason"] for s in stats["skipped"]]
    assert len(ignored) == 2 and all(r.startswith("ignored series: ") for r in ignored)
    assert any("1.2.826.0.1.3680043.8.498.20 (2 images" in r and "Topogram" in r for r in ignored)
    assert any("1.2.826.0.1.3680043.8.498.21 (40 images" in r and "ABDOMEN" in r for r in ignored)
    # the loader reads the same series the adapter chose: the real one (30 slices, 8 mm, HU)
    volume = load_volume(folder, "dicom")
    assert volume.array.shape == (512, 512, 30) and volume.array.min() == -1024
    np.testing.assert_allclose(volume.spacing, [0.6465, 0.6465, 8.0], atol=1e-4)


def test_without_a_chest_word_the_series_with_most_images_wins(tmp_path):
    folder = tmp_path / "images" / "study"
    for uid, n in (("1.2.826.0.1.3680043.8.498.31", 12), ("1.2.826.0.1.3680043.8.498.30", 8)):
        write_dicom_series(folder, chest_hu(n), [2.0 * i for i in range(n)], uid, body_part="",
                           description="Recon", prefix=f"s{n}_")
    volumes, stats = find_volumes(tmp_path / "images")
    assert volumes == [("study", folder, "dicom")]
    assert load_volume(folder, "dicom").array.shape == (48, 48, 12)
    assert "1.2.826.0.1.3680043.8.498.30 (8 images" in stats["skipped"][0]["reason"]


def test_folder_without_a_ct_series_is_skipped_with_its_series_listed(tmp_path):
    folder = tmp_path / "images" / "scouts"
    write_dicom_series(folder, chest_hu(2), [0.0, 0.0], "1.2.826.0.1.3680043.8.498.40",
                       image_type="ORIGINAL\\PRIMARY\\LOCALIZER", prefix="a")
    write_dicom_series(folder, chest_hu(5), [2.0 * i for i in range(5)], "1.2.826.0.1.3680043.8.498.41",
                       modality="OT", prefix="b")
    volumes, stats = find_volumes(tmp_path / "images")
    assert volumes == [] and stats["multi_series_folders"] == 1
    (skipped,) = stats["skipped"]
    assert skipped["volume_id"] == "scouts" and skipped["reason"].startswith("no CT series: ")
    assert "8.498.40 (2 images" in skipped["reason"] and "8.498.41 (5 images" in skipped["reason"]
    with pytest.raises(BadVolume, match=r"no CT series: only 1\.2\.826"):
        load_volume(folder, "dicom")
