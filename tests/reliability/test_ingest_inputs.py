"""Ingest inputs: unreadable CSVs name the file and what to do, duplicates and skipped volumes are named,
and a reports CSV edit reruns ingest and what follows in Snakemake."""
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

import simcrop.data.ingest as ingest_module
from simcrop.config import DataConfig, FolderAdapterConfig
from simcrop.data.ingest import ingest

from ctrate_tree import write_ctrate_tree

HEADER = "StudyID,Befund,Beurteilung\n"
LATIN1_ROW = "case_2,Rundherd mit Größe 5 mm,Kontrolle\n"


def _images(folder, names=("case_1", "case_2", "case_3")):
    folder.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(1).integers(-1000, 400, (12, 12, 6)).astype(np.int16)
    for name in names:
        nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 4.0, 1.0])), folder / f"{name}.nii.gz")
    return folder


def _folder_cfg(images, reports):
    return DataConfig(dataset="folder", root=str(images), val_fraction=0.0, test_fraction=0.0,
                      folder=FolderAdapterConfig(images=str(images), reports_csv=str(reports), id_column="StudyID",
                                                 findings_column="Befund", impressions_column="Beurteilung"))


def _ingest(cfg, out):
    """Errors below are simcrop.io.DataError (a ValueError: one line in the CLI); the tests pin the message."""
    return ingest(cfg, out / "manifest.csv", out / "ingest_report.json")


def test_latin1_reports_csv_names_file_byte_and_fix(tmp_path):
    images = _images(tmp_path / "images")
    reports = tmp_path / "reports.csv"
    head = (HEADER + "case_1,Kein Befund,Normal\n").encode()
    reports.write_bytes(head + LATIN1_ROW.encode("latin-1"))
    offset = len(head) + LATIN1_ROW.index("ö")
    with pytest.raises(ValueError) as err:
        _ingest(_folder_cfg(images, reports), tmp_path / "run")
    message = str(err.value)
    assert message.startswith(f"{reports}: reports CSV")
    assert "not UTF-8" in message and f"byte offset {offset} (line 3)" in message and "0xf6" in message
    assert "re-save the file as UTF-8" in message
    assert not (tmp_path / "run" / "manifest.csv").exists()


def test_utf8_with_byte_order_mark_reads_the_first_column(tmp_path):
    images = _images(tmp_path / "images")
    reports = tmp_path / "reports.csv"
    reports.write_bytes(b"\xef\xbb\xbf" + (HEADER + LATIN1_ROW).encode("utf-8"))   # Excel's "CSV UTF-8"
    _ingest(_folder_cfg(images, reports), tmp_path / "run")
    manifest = (tmp_path / "run" / "manifest.csv").read_text(encoding="utf-8")
    assert "Rundherd mit Größe 5 mm" in manifest


def test_empty_reports_csv_names_the_file(tmp_path):
    images = _images(tmp_path / "images")
    (tmp_path / "reports.csv").write_bytes(b"")
    with pytest.raises(ValueError, match=r"reports\.csv: reports CSV .* is an empty file \(0 bytes\)"):
        _ingest(_folder_cfg(images, tmp_path / "reports.csv"), tmp_path / "run")
    (tmp_path / "reports.csv").write_text("\n\n")
    with pytest.raises(ValueError, match=r"reports\.csv: .* no header row"):
        _ingest(_folder_cfg(images, tmp_path / "reports.csv"), tmp_path / "run")


def test_ctrate_csvs_and_no_chest_list_name_the_file(tmp_path):
    root = write_ctrate_tree(tmp_path / "ct", "v2")
    reports = root / "radiology_text_reports" / "train_reports.csv"
    reports.write_bytes(reports.read_bytes().replace(b"nodule", "Knötchen".encode("latin-1"), 1))
    with pytest.raises(ValueError, match=r"train_reports\.csv: CT-RATE CSV is not UTF-8: byte 0xf6"):
        _ingest(DataConfig(dataset="ctrate", root=str(root)), tmp_path / "run")
    root = write_ctrate_tree(tmp_path / "ct2", "v2")
    labels = root / "multi_abnormality_labels" / "valid_predicted_labels.csv"
    labels.write_bytes(b"")
    with pytest.raises(ValueError, match=r"valid_predicted_labels\.csv: CT-RATE CSV is an empty file"):
        _ingest(DataConfig(dataset="ctrate", root=str(root)), tmp_path / "run")
    root = write_ctrate_tree(tmp_path / "ct3", "v2")
    (root / "metadata" / "no_chest_train.txt").write_bytes("train_1_a_1.nii.gz # Brustkörb\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"no_chest_train\.txt: no_chest list is not UTF-8"):
        _ingest(DataConfig(dataset="ctrate", root=str(root)), tmp_path / "run")


def test_cli_reports_a_bad_csv_in_one_line(tmp_path):
    images = _images(tmp_path / "images")
    (tmp_path / "reports.csv").write_bytes((HEADER + LATIN1_ROW).encode("latin-1"))
    data = {"dataset": "folder", "root": str(images), "val_fraction": 0.0, "test_fraction": 0.0,
            "folder": {"images": str(images), "reports_csv": str(tmp_path / "reports.csv"),
                       "id_column": "StudyID", "findings_column": "Befund", "impressions_column": "Beurteilung"}}
    result = subprocess.run([sys.executable, "-m", "simcrop.cli", "ingest", "--set-json", json.dumps({"data": data}),
                             "--manifest", str(tmp_path / "run" / "manifest.csv")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"{tmp_path / 'reports.csv'}: reports CSV" in errors[0] and "UTF-8" in errors[0]


def test_duplicate_report_rows_warn_with_the_ids(tmp_path, caplog):
    images = _images(tmp_path / "images")
    reports = tmp_path / "reports.csv"
    reports.write_text(HEADER + "case_1,first,a\ncase_2,x,y\ncase_1,second,b\ncase_2,x,y\ncase_3,z,z\n")
    with caplog.at_level(logging.WARNING):
        _ingest(_folder_cfg(images, reports), tmp_path / "run")
    warning = next(r.getMessage() for r in caplog.records if "duplicated" in r.getMessage())
    assert str(reports) in warning and "case_1, case_2" in warning and "keeping the first" in warning
    assert "first" in (tmp_path / "run" / "manifest.csv").read_text()


def test_ctrate_skipped_volumes_are_listed_with_reasons(tmp_path):
    volumes = ["train_1_a_1", "train_2_a_1", "train_3_a_1", "train_4_a_1", "valid_1_a_1", "valid_2_a_1"]
    root = write_ctrate_tree(tmp_path / "ct", "v1", volumes, no_report=["train_2_a_1"], no_labels=["valid_1_a_1"],
                             no_metadata=["train_3_a_1"], no_chest=["x/train_4_a_1.nii.gz"])
    report = _ingest(DataConfig(dataset="ctrate", root=str(root)), tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "ingest_report.json").read_text())
    reasons = {s["volume_id"]: s["reason"] for s in saved["skipped"]}
    assert reasons == {
        "train_2_a_1": "missing_report: no row in radiology_text_reports/train_reports.csv",
        "train_3_a_1": "missing_metadata: no row in metadata/train_metadata.csv",
        "train_4_a_1": "excluded_no_chest: listed as not a chest CT in metadata/no_chest_train.txt",
        "valid_1_a_1": "missing_labels: no row in multi_abnormality_labels/valid_predicted_labels.csv",
    }
    assert all(Path(s["path"]).name == f"{s['volume_id']}.nii.gz" for s in saved["skipped"])
    assert report["volumes"] == 2 and report["missing_report"] == 1


def test_folder_volumes_without_a_report_row_are_named(tmp_path):
    images = _images(tmp_path / "images")
    (tmp_path / "reports.csv").write_text(HEADER + "case_2,x,y\n")
    report = _ingest(_folder_cfg(images, tmp_path / "reports.csv"), tmp_path / "run")
    assert report["without_report"] == ["case_1", "case_3"] and report["missing_report"] == 2
    assert report["skipped"] == []


def test_input_files_name_each_csv(tmp_path):
    images = _images(tmp_path / "images")
    (tmp_path / "reports.csv").write_text(HEADER)
    input_files = ingest_module.input_files
    assert input_files(_folder_cfg(images, tmp_path / "reports.csv")) == [str(images), str(tmp_path / "reports.csv")]
    root = write_ctrate_tree(tmp_path / "ct", "v2")
    listed = input_files(DataConfig(dataset="ctrate", root=str(root)))
    assert listed[0] == str(root)
    assert {str(Path(p).relative_to(root)) for p in listed[1:]} == {
        "radiology_text_reports/train_reports.csv", "radiology_text_reports/validation_reports.csv",
        "multi_abnormality_labels/train_predicted_labels.csv", "multi_abnormality_labels/valid_predicted_labels.csv",
        "metadata/train_metadata.csv", "metadata/validation_metadata.csv",
        "metadata/no_chest_train.txt", "metadata/no_chest_valid.txt"}


@pytest.mark.slow
def test_snakemake_reruns_ingest_and_sentences_after_a_reports_csv_edit(repo_root, tmp_path):
    work = tmp_path / "work"
    images = _images(work / "images")
    reports = work / "reports" / "reports.csv"
    reports.parent.mkdir()
    reports.write_text(HEADER + "case_1,A nodule.,Stable.\ncase_2,No effusion.,Normal.\n")
    config = {"run": "tiny", "data": {"dataset": "folder", "root": "images", "val_fraction": 0.0,
                                      "test_fraction": 0.0,
                                      "folder": {"images": "images", "reports_csv": "reports/reports.csv",
                                                 "id_column": "StudyID", "findings_column": "Befund",
                                                 "impressions_column": "Beurteilung"}},
              "experiment": {"objectives": ["random"], "tasks": ["probe"], "downstream": []}}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    target = "results/tiny/sentences.jsonl"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")

    def snakemake(*extra):
        args = [sys.executable, "-m", "snakemake", "--snakefile", str(repo_root / "workflow" / "Snakefile"),
                "--directory", str(work), "--configfile", str(work / "config.yaml"), "--cores", "1", *extra]
        result = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout + result.stderr

    snakemake(target)
    assert "Nothing to be done" in snakemake(target, "-n")
    time.sleep(1.1)                           # a later mtime than the outputs on coarse file systems
    reports.write_text(HEADER + "case_1,A nodule.,Stable.\ncase_2,No effusion.,Normal.\ncase_3,Edited.,x\n")
    planned = snakemake(target, "-n")
    assert "rule ingest:" in planned or "checkpoint ingest:" in planned, planned
    assert "rule sentences:" in planned, planned
