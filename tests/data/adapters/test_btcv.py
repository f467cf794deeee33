import json

import numpy as np
import pytest

from simcrop.config import DataConfig, PreprocessConfig
from simcrop.data.adapters.btcv import read_btcv
from simcrop.data.downstream_labels import BTCV_ORGANS
from simcrop.data.ingest import ingest
from simcrop.data.manifest import MANIFEST_COLUMNS, read_manifest
from simcrop.data.preprocess import preprocess_volume
from simcrop.data.synthetic.downstream import write_btcv
from simcrop.data.volume_io import load_nifti


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("btcv")
    write_btcv(root, seed=0, n_cases=6)
    return root


def test_synthetic_sample_rows(sample):
    rows, stats = read_btcv(sample)
    assert len(rows) == 6 and all(set(r) == set(MANIFEST_COLUMNS) for r in rows)
    assert [r["split"] for r in rows].count("test") == 2             # the `validation` list
    row = rows[0]
    assert (row["volume_id"], row["format"], row["labels"]) == ("img0001", "nifti", "")
    assert row["organ_mask"] == str(sample / "labelsTr" / "label0001.nii.gz")
    values = set(np.unique(load_nifti(row["organ_mask"]).array))
    assert {BTCV_ORGANS[o] for o in ("liver", "right_kidney", "left_kidney", "stomach", "aorta")} <= values
    assert values <= {0, *BTCV_ORGANS.values()}


def test_ingest_and_preprocess(sample, tmp_path):
    report = ingest(DataConfig(dataset="btcv", root=str(sample), val_fraction=0.25),
                    tmp_path / "manifest.csv", tmp_path / "report.json")
    assert report["splits"] == {"train": {"volumes": 3, "patients": 3}, "val": {"volumes": 1, "patients": 1},
                                "test": {"volumes": 2, "patients": 2}}
    row = read_manifest(tmp_path / "manifest.csv").iloc[0]
    record = preprocess_volume(row, tmp_path / "pre", PreprocessConfig(spacing=[9.0, 9.0, 12.0]))
    assert record["organ_output"]


def write_spec(root, spec):
    (root / "dataset.json").write_text(json.dumps(spec))


def test_dataset_json_pointing_at_missing_file(sample, tmp_path):
    spec = json.loads((sample / "dataset.json").read_text())
    spec["training"] = [{"image": str(sample / spec["training"][0]["image"]), "label": "labelsTr/gone.nii.gz"}]
    write_spec(tmp_path, spec)
    with pytest.raises(ValueError, match=r"dataset\.json \(training\[0\]\): entry .*label file .*gone\.nii\.gz not found"):
        read_btcv(tmp_path)


def test_bad_dataset_json(tmp_path):
    with pytest.raises(ValueError, match=r"dataset\.json: BTCV dataset.json not found"):
        read_btcv(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_btcv(tmp_path)
    write_spec(tmp_path, {"name": "x"})
    with pytest.raises(ValueError, match="expected a 'training'"):
        read_btcv(tmp_path)
    write_spec(tmp_path, {"training": [{"label": "a.nii.gz"}]})
    with pytest.raises(ValueError, match=r"training\[0\]\): entry .* has no 'image' path"):
        read_btcv(tmp_path)
