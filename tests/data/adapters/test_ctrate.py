import json
import logging
import math

import nibabel as nib
import numpy as np
import pytest

from simcrop.data.adapters.ctrate import add_synthetic_extras, detect_release, read_ctrate, volume_key
from simcrop.data.labels import CTRATE_LABELS
from simcrop.data.manifest import MANIFEST_COLUMNS

from ctrate_tree import HU_VALUE, findings_of, label_of, write_ctrate_tree, write_lesions


def by_id(rows):
    return {r["volume_id"]: r for r in rows}


def test_v2_detected_and_never_rescaled(tmp_path, caplog):
    write_ctrate_tree(tmp_path, "v2")
    with caplog.at_level(logging.INFO, logger="simcrop.data.adapters.ctrate"):
        rows, stats = read_ctrate(tmp_path)
    assert stats["release"] == "v2" and "train_fixed/" in stats["release_detection"]
    assert "release v2" in caplog.text
    row = by_id(rows)["train_1_a_1"]
    assert set(row) == set(MANIFEST_COLUMNS)
    assert (row["release"], row["apply_rescale"], row["spacing_source"]) == ("v2", 0, "header")
    assert (row["rescale_slope"], row["rescale_intercept"]) == (1.0, 0.0)
    assert math.isnan(row["spacing_x"])
    assert row["image"] == str(tmp_path / "train_fixed" / "train_1" / "train_1_a" / "train_1_a_1.nii.gz")
    assert (row["patient_id"], row["scan_id"], row["format"], row["source"]) == ("train_1", "train_1_a", "nifti", "ctrate")


def test_v1_rescale_and_spacing_from_metadata(tmp_path):
    write_ctrate_tree(tmp_path, "v1", intercepts={"train_2_a_1": -8192.0})
    rows, stats = read_ctrate(tmp_path)
    assert stats["release"] == "v1" and "no *_fixed/" in stats["release_detection"]
    rows = by_id(rows)
    for name, intercept in (("train_1_a_1", -1024.0), ("train_2_a_1", -8192.0)):
        row = rows[name]
        assert (row["release"], row["apply_rescale"], row["spacing_source"]) == ("v1", 1, "metadata")
        assert (row["rescale_slope"], row["rescale_intercept"]) == (1.0, intercept)
        assert (row["spacing_x"], row["spacing_y"], row["spacing_z"]) == (0.75, 0.8, 1.5)
        stored = np.asarray(nib.load(row["image"]).dataobj)
        assert np.all(stored * row["rescale_slope"] + row["rescale_intercept"] == HU_VALUE)


def test_both_releases_prefer_v2(tmp_path, caplog):
    write_ctrate_tree(tmp_path, "v1")
    write_ctrate_tree(tmp_path, "v2")
    with caplog.at_level(logging.INFO):
        rows, stats = read_ctrate(tmp_path)
    assert stats["release"] == "v2" and "preferring v2" in stats["release_detection"]
    assert "preferring v2" in caplog.text
    assert all(r["apply_rescale"] == 0 and "_fixed" in r["image"] for r in rows)
    rows, stats = read_ctrate(tmp_path, release="v1")
    assert stats["release"] == "v1" and all(r["apply_rescale"] == 1 for r in rows)


def test_requested_release_missing_or_unknown(tmp_path):
    write_ctrate_tree(tmp_path, "v2")
    with pytest.raises(ValueError, match="release v1 requested"):
        detect_release(tmp_path, "v1")
    with pytest.raises(ValueError, match="auto, v1 or v2"):
        detect_release(tmp_path, "v3")
    with pytest.raises(ValueError, match="no CT-RATE split folder"):
        detect_release(tmp_path / "radiology_text_reports")
    with pytest.raises(ValueError, match="root not found"):
        read_ctrate(tmp_path / "nowhere")


def test_report_text_labels_and_splits(tmp_path):
    tricky = 'Nodule, 4 mm, "stable", in the RUL;\nno effusion, no consolidation.'
    write_ctrate_tree(tmp_path, "v2", findings={"train_3_a_1": tricky})
    rows = by_id(read_ctrate(tmp_path)[0])
    assert rows["train_3_a_1"]["findings"] == tricky
    assert rows["train_1_a_1"]["findings"] == findings_of("train_1_a_1")
    assert rows["train_1_a_1"]["clinical_information"] == ""  # "Not given."
    assert rows["train_1_a_2"]["impressions"] == ""
    assert rows["train_1_a_1"]["impressions"] == "Stable nodule."
    assert rows["train_1_a_1"]["technique"].startswith("Non-contrast chest CT, 1 mm slices,")
    labels = json.loads(rows["train_1_a_1"]["labels"])
    assert list(labels) == CTRATE_LABELS
    assert labels == {lab: label_of("train_1_a_1", i) for i, lab in enumerate(CTRATE_LABELS)}
    assert rows["valid_1_a_1"]["split"] == "test" and rows["valid_1_a_1"]["patient_id"] == "valid_1"
    assert {r["split"] for r in rows.values() if r["patient_id"].startswith("train")} == {"train"}
    assert rows["train_1_a_2"]["scan_id"] == rows["train_1_a_1"]["scan_id"] != rows["train_1_b_1"]["scan_id"]


def test_no_chest_missing_rows_counted_and_skipped(tmp_path):
    write_ctrate_tree(tmp_path, "v2", no_chest=["/data/CT-RATE/train_fixed/train_4/train_4_a/train_4_a_1.nii.gz",
                                                "valid_2_a_1.nii.gz"],
                      no_report=["train_5_a_1"], no_labels=["train_6_a_1"], extra_report_rows=["train_99_a_1"])
    rows, stats = read_ctrate(tmp_path)
    ids = set(by_id(rows))
    assert ids.isdisjoint({"train_4_a_1", "valid_2_a_1", "train_5_a_1", "train_6_a_1"})
    assert (stats["found"], len(rows)) == (10, 6)
    assert (stats["excluded_no_chest"], stats["missing_report"], stats["missing_labels"]) == (2, 1, 1)
    assert stats["csv_rows_without_volume"] == 1
    kept, _ = read_ctrate(tmp_path, exclude_no_chest=False)
    assert {"train_4_a_1", "valid_2_a_1"} <= set(by_id(kept))


def test_v1_missing_metadata_row_skipped(tmp_path):
    write_ctrate_tree(tmp_path, "v1", no_metadata=["train_2_a_1"])
    rows, stats = read_ctrate(tmp_path)
    assert stats["missing_metadata"] == 1 and "train_2_a_1" not in by_id(rows)


def test_missing_csv_or_column_names_file_and_column(tmp_path):
    write_ctrate_tree(tmp_path, "v2")
    labels = tmp_path / "multi_abnormality_labels" / "valid_predicted_labels.csv"
    text = labels.read_text().replace("Hiatal hernia", "Hiatal_hernia")
    labels.write_text(text)
    with pytest.raises(ValueError, match=r"valid_predicted_labels\.csv.*'Hiatal hernia'"):
        read_ctrate(tmp_path)
    (tmp_path / "radiology_text_reports" / "train_reports.csv").unlink()
    with pytest.raises(ValueError, match=r"train_reports\.csv: CSV not found"):
        read_ctrate(tmp_path)


def test_synthetic_extras(tmp_path):
    write_ctrate_tree(tmp_path, "v2")
    records = write_lesions(tmp_path, skip=["valid_2_a_1"])
    rows, _ = read_ctrate(tmp_path, source="synthetic")
    assert add_synthetic_extras(rows, tmp_path) == 1
    row = by_id(rows)["train_1_a_1"]
    assert row["source"] == "synthetic"
    assert row["lesion_mask"] == str(tmp_path / "synthetic" / "masks" / "train_1_a_1_lesions.nii.gz")
    assert row["organ_mask"] == str(tmp_path / "synthetic" / "masks" / "train_1_a_1_organs.nii.gz")
    lesions = json.loads(row["lesions"])
    assert lesions == records["train_1_a_1"]["lesions"]
    start, end = lesions[0]["sentence_span"]
    assert row["findings"][start:end] == lesions[0]["sentence"]
    assert by_id(rows)["valid_2_a_1"]["lesions"] == ""
    (tmp_path / "synthetic" / "lesions.jsonl").unlink()
    with pytest.raises(ValueError, match="lesions.jsonl: synthetic lesion file not found"):
        add_synthetic_extras(rows, tmp_path)


def test_volume_key():
    assert volume_key("a/b/train_1_a_1.nii.gz") == "train_1_a_1"
    assert volume_key(" train_1_a_1 ") == "train_1_a_1"
