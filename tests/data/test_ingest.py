import dataclasses
import json
import logging
import os

import pandas as pd
import pytest

from simcrop.config import DataConfig, FolderAdapterConfig
from simcrop.data.ingest import ingest
from simcrop.data.manifest import ManifestError, read_manifest

from ctrate_tree import write_ctrate_tree, write_lesions

# 30 training patients (1-3 reconstructions/scans each) and 4 valid patients
VOLUMES = ([f"train_{p}_a_1" for p in range(1, 31)] + [f"train_{p}_a_2" for p in range(1, 31, 3)]
           + [f"train_{p}_b_1" for p in range(1, 31, 4)] + [f"valid_{p}_a_1" for p in range(1, 5)])


def run(cfg, out):
    return ingest(cfg, out / "manifest.csv", out / "ingest_report.json")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctrate")
    return write_ctrate_tree(root, "v2", VOLUMES, no_report=["train_30_a_1"],
                             no_chest=["/x/valid_fixed/valid_4/valid_4_a/valid_4_a_1.nii.gz"])


def test_ctrate_manifest_and_report(tree, tmp_path, caplog):
    cfg = DataConfig(dataset="ctrate", root=str(tree), val_fraction=0.2, split_seed=7)
    with caplog.at_level(logging.INFO):
        report = run(cfg, tmp_path)
    assert "CT-RATE release v2" in caplog.text and "auto: found train_fixed/" in caplog.text
    frame = read_manifest(tmp_path / "manifest.csv")
    assert json.loads((tmp_path / "ingest_report.json").read_text()) == json.loads(json.dumps(report))
    assert (report["release"], report["found"], report["volumes"]) == ("v2", len(VOLUMES), len(VOLUMES) - 2)
    assert (report["excluded_no_chest"], report["missing_report"], report["missing_labels"]) == (1, 1, 0)
    assert report["empty_findings"] == 0
    # train_30 has no report row, so 29 training patients remain: round(0.2 * 29) = 6 held out
    assert (report["splits"]["train"]["patients"], report["splits"]["val"]["patients"]) == (23, 6)
    assert report["splits"]["test"] == {"volumes": 3, "patients": 3}
    assert sum(s["volumes"] for s in report["splits"].values()) == len(frame)
    assert (frame.groupby("patient_id")["split"].nunique() == 1).all()
    assert set(frame.loc[frame["patient_id"].str.startswith("valid"), "split"]) == {"test"}
    assert set(frame.loc[frame["patient_id"].str.startswith("train"), "split"]) == {"train", "val"}
    assert frame["apply_rescale"].eq(0).all() and frame["source"].eq("ctrate").all()


def test_splits_deterministic_and_seeded(tree, tmp_path):
    cfg = DataConfig(dataset="ctrate", root=str(tree), val_fraction=0.2, split_seed=7)
    splits = []
    for i, seed in enumerate((7, 7, 8)):
        run(dataclasses.replace(cfg, split_seed=seed), tmp_path / str(i))
        splits.append(read_manifest(tmp_path / str(i) / "manifest.csv").set_index("volume_id")["split"])
    assert splits[0].equals(splits[1])
    assert not splits[0].equals(splits[2])


def test_relative_root_gives_relative_paths(tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tree.parent)
    run(DataConfig(dataset="ctrate", root=tree.name), tmp_path)
    images = read_manifest(tmp_path / "manifest.csv")["image"]
    assert all(not os.path.isabs(p) and p.startswith(tree.name + os.sep) and os.path.exists(p) for p in images)
    run(DataConfig(dataset="ctrate", root=str(tree)), tmp_path)
    assert all(os.path.isabs(p) for p in read_manifest(tmp_path / "manifest.csv")["image"])


def test_synthetic(tmp_path):
    root = write_ctrate_tree(tmp_path / "corpus", "v2", VOLUMES[:6])
    write_lesions(root, VOLUMES[:6])
    report = run(DataConfig(dataset="synthetic", root=str(root)), tmp_path)
    frame = read_manifest(tmp_path / "manifest.csv")
    assert frame["source"].eq("synthetic").all() and report["missing_lesion_records"] == 0
    assert frame["lesion_mask"].str.endswith("_lesions.nii.gz").all()
    assert all(json.loads(x)[0]["label"] == "Lung nodule" for x in frame["lesions"])
    (root / "synthetic" / "lesions.jsonl").unlink()
    with pytest.raises(ValueError, match="lesions.jsonl"):
        run(DataConfig(dataset="synthetic", root=str(root)), tmp_path)


def test_folder(tmp_path, shared_data):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("cip_TestInput_chestct_64x64x50.nii.gz", "cip_copdgene10002K_insp_ct64.nii.gz"):
        (images / name).symlink_to(shared_data / "ct" / name)
    (images / "series").symlink_to(shared_data / "dicom" / "lungpetctdx_A0002_B40f", target_is_directory=True)
    cfg = DataConfig(dataset="folder", root=str(images), val_fraction=0.34, folder=FolderAdapterConfig())
    report = run(cfg, tmp_path)
    frame = read_manifest(tmp_path / "manifest.csv")
    assert sorted(frame["format"]) == ["dicom", "nifti", "nifti"] and report["release"] == ""
    # no split of its own: test_fraction (0.2) of the 3 patients is held out as test, then val_fraction of the rest
    assert report["splits"]["val"]["volumes"] == 1 and report["splits"]["test"]["volumes"] == 1


def test_prebuilt_manifest(tree, tmp_path):
    run(DataConfig(dataset="ctrate", root=str(tree)), tmp_path / "a")
    report = run(DataConfig(dataset="manifest", root=str(tmp_path / "a" / "manifest.csv")), tmp_path / "b")
    assert (tmp_path / "b" / "manifest.csv").read_text() == (tmp_path / "a" / "manifest.csv").read_text()
    assert report["volumes"] == report["found"]
    frame = pd.read_csv(tmp_path / "a" / "manifest.csv", dtype=str, keep_default_na=False)
    frame.loc[0, "split"] = "holdout"
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ManifestError, match="bad.csv: unknown split"):
        run(DataConfig(dataset="manifest", root=str(tmp_path / "bad.csv")), tmp_path / "c")
    assert not (tmp_path / "c" / "manifest.csv").exists()


def test_bad_dataset_or_root(tmp_path):
    with pytest.raises(ValueError, match="data.dataset"):
        run(DataConfig(dataset="radchest"), tmp_path)
    with pytest.raises(ValueError, match="nowhere: CT-RATE root not found"):
        run(DataConfig(dataset="ctrate", root=str(tmp_path / "nowhere")), tmp_path)
