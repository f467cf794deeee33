import json

import numpy as np
import pandas as pd
import pytest

from simcrop.config import DataConfig, PreprocessConfig
from simcrop.data.adapters.radchestct import SPLIT_FILES, read_radchestct
from simcrop.data.downstream_labels import SIMCROP_LABELS
from simcrop.data.ingest import ingest
from simcrop.data.manifest import MANIFEST_COLUMNS, read_manifest
from simcrop.data.preprocess import preprocess_volume
from simcrop.data.synthetic.downstream import write_radchestct


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("radchestct")
    write_radchestct(root, seed=0, n_cases=6)
    return root


def test_synthetic_sample_rows(sample):
    rows, stats = read_radchestct(sample)
    assert len(rows) == 6 and stats["missing_labels"] == 0 and stats["official_val"]
    assert all(set(r) == set(MANIFEST_COLUMNS) for r in rows)
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    row = rows[0]
    assert (row["format"], row["spacing_source"], row["source"]) == ("npz", "metadata", "radchestct")
    assert row["patient_id"] == row["volume_id"] == row["image"].rsplit("/", 1)[-1][:-4]
    assert list(json.loads(row["labels"])) == SIMCROP_LABELS
    assert row["spacing_x"] > 5          # the sample's affine key, not the 0.8 mm default


def test_labels_or_over_locations(sample):
    table = pd.read_csv(sample / SPLIT_FILES["train"])
    rows = {r["volume_id"]: json.loads(r["labels"]) for r in read_radchestct(sample)[0]}
    for _, line in table.iterrows():
        nodule = int(line.filter(regex=r"^(nodule|nodulegr1cm)\*").max())
        assert rows[line["NoteAcc_DEID"]]["Lung nodule"] == nodule


def test_ingest_keeps_official_split_and_preprocesses(sample, tmp_path):
    cfg = DataConfig(dataset="radchestct", root=str(sample), val_fraction=0.5)
    report = ingest(cfg, tmp_path / "manifest.csv", tmp_path / "report.json")
    assert report["val_fraction"] == 0.0 and report["splits"]["val"]["volumes"] == 2
    frame = read_manifest(tmp_path / "manifest.csv")
    record = preprocess_volume(frame.iloc[0], tmp_path / "pre", PreprocessConfig(spacing=[9.0, 9.0, 12.0]))
    assert record["input_orientation"] == "LPS" and record["hu_p1"] < -700


def test_single_labels_file_without_split(sample, tmp_path):
    (tmp_path / "volumes").mkdir()
    for path in sorted((sample / "volumes").glob("*.npz"))[:2]:
        (tmp_path / "volumes" / path.name).symlink_to(path)
    table = pd.concat([pd.read_csv(sample / name) for name in SPLIT_FILES.values()])
    table.to_csv(tmp_path / "labels.csv", index=False)
    rows, stats = read_radchestct(tmp_path, spacing_mm=(0.8, 0.8, 0.8))
    assert [r["split"] for r in rows] == ["train", "train"] and not stats["official_val"]
    assert stats["csv_rows_without_volume"] == 4


def test_npz_without_ct_key(sample, tmp_path):
    for name in SPLIT_FILES.values():
        (tmp_path / name).symlink_to(sample / name)
    np.savez(tmp_path / "trn00001.npz", volume=np.zeros((2, 3, 3), np.int16))
    with pytest.raises(ValueError, match=r"trn00001\.npz: npz has no 'ct' array"):
        read_radchestct(tmp_path)


def test_labels_csv_missing_columns(sample, tmp_path):
    table = pd.read_csv(sample / SPLIT_FILES["train"])
    table.drop(columns=["NoteAcc_DEID"]).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ValueError, match=r"labels\.csv: missing required column 'NoteAcc_DEID'"):
        read_radchestct(tmp_path)
    table.drop(columns=[c for c in table.columns if c.startswith("hernia*")]).to_csv(tmp_path / "labels.csv",
                                                                                     index=False)
    with pytest.raises(ValueError, match=r"labels\.csv: no column for label 'Hiatal hernia'.*'hernia'"):
        read_radchestct(tmp_path)


def test_no_labels_file(tmp_path):
    with pytest.raises(ValueError, match="no RadChestCT labels CSV"):
        read_radchestct(tmp_path)
