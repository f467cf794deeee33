import json

import nibabel as nib
import numpy as np
import pytest

from simcrop.config import DataConfig, PreprocessConfig
from simcrop.data.adapters.ccccii import LUNG_WINDOW, is_8bit, is_slice_first, read_ccccii
from simcrop.data.downstream_labels import CCCCII_LABELS
from simcrop.data.ingest import ingest
from simcrop.data.manifest import MANIFEST_COLUMNS, read_manifest
from simcrop.data.preprocess import preprocess_volume
from simcrop.data.synthetic.downstream import write_ccccii
from simcrop.data.volume_io import load_volume


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("ccccii")
    write_ccccii(root, seed=0, n_cases=6)
    return root


@pytest.mark.parametrize("shape, expected", [((40, 512, 512), True), ((512, 512, 40), False),
                                             ((300, 512, 512), True), ((64, 64, 64), False), ((20, 60, 70), True)])
def test_is_slice_first(shape, expected):
    assert is_slice_first(shape) is expected


def test_is_8bit():
    assert is_8bit(np.zeros((2, 2, 2), np.uint8))
    assert is_8bit(np.array([0, 17, 255], np.int16))
    assert not is_8bit(np.array([-1000, 40], np.int16))


def test_synthetic_sample_rows(sample, tmp_path):
    rows, stats = read_ccccii(sample, cache_dir=tmp_path / "cache")
    rows = {r["volume_id"]: r for r in rows}
    assert len(rows) == 6 and all(set(r) == set(MANIFEST_COLUMNS) for r in rows.values())
    assert stats["per_class"] == {name: 2 for name in CCCCII_LABELS}
    assert (stats["slice_first"], stats["eight_bit"], stats["converted"], stats["spacing_assumed"]) == (3, 3, 3, 2)
    assert sorted(stats["eight_bit_volumes"]) == sorted(stats["slice_first_volumes"])
    hu_case, stack_case = rows["Normal_0001_3000"], rows["NCP_0002_3001"]
    assert (hu_case["format"], hu_case["apply_rescale"], hu_case["spacing_source"]) == ("nifti", 0, "header")
    assert hu_case["patient_id"] == "Normal_0001"
    assert json.loads(stack_case["labels"]) == {"normal": 0, "covid19_pneumonia": 1, "common_pneumonia": 0}
    assert (stack_case["format"], stack_case["apply_rescale"]) == ("npz", 1)
    lo, hi = LUNG_WINDOW
    assert stack_case["rescale_intercept"] == lo and stack_case["rescale_slope"] * 255 + lo == pytest.approx(hi)
    # the zooms of the slice-first NIfTI header are read as (z, y, x)
    zooms = nib.load(str(sample / "NCP" / "0002" / "3001.nii.gz")).header.get_zooms()
    assert (stack_case["spacing_x"], stack_case["spacing_z"]) == pytest.approx((zooms[2], zooms[0]))
    # the converted stack loads as (X, Y, Z) with the slices last
    volume = load_volume(stack_case["image"], "npz", spacing=[stack_case[f"spacing_{a}"] for a in "xyz"])
    assert volume.array.shape[0] == volume.array.shape[1] == 40 and volume.array.dtype == np.uint8


def test_without_cache_dir_stacks_are_skipped(sample):
    rows, stats = read_ccccii(sample)
    assert len(rows) == 3 and stats["skipped_no_cache_dir"] == 3


def test_ingest_and_preprocess_8bit(sample, tmp_path):
    report = ingest(DataConfig(dataset="ccccii", root=str(sample), val_fraction=0.34, test_fraction=0.0),
                    tmp_path / "manifest.csv", tmp_path / "report.json")
    # single-label data is held out per class: one val patient of each class's two
    assert report["eight_bit"] == 3 and report["splits"]["val"]["patients"] == 3
    frame = read_manifest(tmp_path / "manifest.csv")
    assert all(p.startswith(str(tmp_path / "ccccii_derived")) for p in frame.loc[frame["format"] == "npz", "image"])
    row = frame[frame["volume_id"] == "NCP_0002_3001"].iloc[0]
    record = preprocess_volume(row, tmp_path / "pre", PreprocessConfig(spacing=[9.0, 9.0, 12.0]))
    assert record["rescaled"] == 1 and record["hu_p1"] < -700      # 0–255 mapped back to (pseudo-)HU


def test_unreadable_and_bad_layouts(tmp_path):
    with pytest.raises(ValueError, match="no CC-CCII scans"):
        read_ccccii(tmp_path)
    (tmp_path / "NCP" / "7").mkdir(parents=True)
    np.savez(tmp_path / "NCP" / "7" / "1.npz", volume=np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ValueError, match=r"1\.npz: npz has no 'ct' array"):
        read_ccccii(tmp_path)
    (tmp_path / "NCP" / "7" / "1.npz").unlink()
    (tmp_path / "NCP" / "7" / "2.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(ValueError, match=r"2\.nii\.gz: unreadable NIfTI"):
        read_ccccii(tmp_path)
