import dataclasses

import pandas as pd
import pytest

from simcrop.config import FolderAdapterConfig
from simcrop.data.adapters.folder import find_volumes, read_folder
from simcrop.data.manifest import MANIFEST_COLUMNS

SERIES = "lungpetctdx_A0002_B40f"
CT = "cip_TestInput_chestct_64x64x50.nii.gz"
CT2 = "cip_copdgene10002K_insp_ct64.nii.gz"


@pytest.fixture
def images(tmp_path, shared_data):
    """A user's folder: two real NIfTI files and the real DICOM series, linked in place (never copied)."""
    folder = tmp_path / "images"
    (folder / "nested").mkdir(parents=True)
    (folder / "chest.nii.gz").symlink_to(shared_data / "ct" / CT)
    (folder / "nested" / "copd.nii.gz").symlink_to(shared_data / "ct" / CT2)
    (folder / SERIES).symlink_to(shared_data / "dicom" / SERIES, target_is_directory=True)
    (folder / "notes.txt").write_text("not an image\n")
    return folder


def write_reports(path, rows, columns=("StudyID", "Befund", "Beurteilung", "Patient")):
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


def folder_cfg(images, reports="", **overrides):
    cfg = FolderAdapterConfig(images=str(images), reports_csv=str(reports), id_column="StudyID",
                              findings_column="Befund", impressions_column="Beurteilung")
    return dataclasses.replace(cfg, **overrides)


def test_real_dicom_series_in_place(shared_data):
    volumes, stats = find_volumes(shared_data / "dicom")
    assert volumes == [(SERIES, shared_data / "dicom" / SERIES, "dicom")]
    assert stats["multi_series_folders"] == 0


def test_nifti_and_dicom_with_reports(images, tmp_path):
    reports = write_reports(tmp_path / "reports.csv", [
        ("chest.nii.gz", "Emphysema, mild, in both upper lobes.", "Not given.", ""),
        (SERIES, "Right hilar mass, 4.2 cm.", "Adenocarcinoma, known.", ""),
        ("orphan", "A report without an image.", "", ""),
    ])
    rows, stats = read_folder(folder_cfg(images, reports))
    rows = {r["volume_id"]: r for r in rows}
    assert set(rows) == {"chest", "copd", SERIES}
    assert all(set(r) == set(MANIFEST_COLUMNS) for r in rows.values())
    assert (rows["chest"]["format"], rows["copd"]["format"], rows[SERIES]["format"]) == ("nifti", "nifti", "dicom")
    assert rows["chest"]["image"] == str(images / "chest.nii.gz")
    assert rows["copd"]["image"] == str(images / "nested" / "copd.nii.gz")
    assert rows[SERIES]["image"] == str(images / SERIES)
    assert rows["chest"]["findings"] == "Emphysema, mild, in both upper lobes."
    assert rows["chest"]["impressions"] == ""
    assert rows[SERIES]["impressions"] == "Adenocarcinoma, known."
    assert all(r["patient_id"] == r["volume_id"] == r["scan_id"] for r in rows.values())
    assert all(r["split"] == "train" and r["source"] == "folder" and r["spacing_source"] == "header"
               for r in rows.values())
    assert (stats["found"], stats["missing_report"], stats["empty_findings"]) == (3, 1, 1)
    assert stats["csv_rows_without_volume"] == 1


def test_patient_column(images, tmp_path):
    reports = write_reports(tmp_path / "reports.csv", [
        ("chest", "Normal.", "", "P1"), ("copd", "Emphysema.", "", "P1"), (SERIES, "Mass.", "", "P2")])
    rows, _ = read_folder(folder_cfg(images, reports, patient_column="Patient"))
    assert {r["volume_id"]: r["patient_id"] for r in rows} == {"chest": "P1", "copd": "P1", SERIES: "P2"}


def test_no_reports_csv(images):
    rows, stats = read_folder(folder_cfg(images))
    assert len(rows) == 3 and stats["missing_report"] == 0 and all(r["findings"] == "" for r in rows)


def test_missing_column_or_csv_names_file_and_column(images, tmp_path):
    reports = write_reports(tmp_path / "reports.csv", [("chest", "x", "y")], columns=("StudyID", "Befund", "Impr"))
    with pytest.raises(ValueError, match=r"reports\.csv: missing column 'Beurteilung' \(data\.folder\.impressions_column\)"):
        read_folder(folder_cfg(images, reports))
    with pytest.raises(ValueError, match="missing column 'Patient'"):
        read_folder(folder_cfg(images, reports, impressions_column="Impr", patient_column="Patient"))
    with pytest.raises(ValueError, match="nope.csv: reports CSV not found"):
        read_folder(folder_cfg(images, tmp_path / "nope.csv"))
    with pytest.raises(ValueError, match="image folder not found"):
        read_folder(folder_cfg(tmp_path / "missing"))


def test_duplicate_ids_rejected(images, shared_data):
    (images / "chest.nii").symlink_to(shared_data / "ct" / CT2)
    with pytest.raises(ValueError, match="'chest'"):
        find_volumes(images)


def test_hidden_and_temporary_files_are_not_volumes(images, shared_data):
    """A killed atomic write leaves `.<name>.<random>.tmp.nii.gz`; hidden folders hold caches, not data."""
    (images / ".chest.nii.gz.ab12cd34.tmp.nii.gz").symlink_to(shared_data / "ct" / CT)
    (images / ".cache").mkdir()
    (images / ".cache" / "other.nii.gz").symlink_to(shared_data / "ct" / CT2)
    (images / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    volumes, _ = find_volumes(images)
    assert sorted(v for v, _, _ in volumes) == sorted(["chest", "copd", SERIES])


def test_multi_series_folder_keeps_its_chest_ct_and_says_what_was_ignored(shared_data, tmp_path):
    from volume_door import chest_hu, copy_real_series, write_dicom_series

    folder = tmp_path / "images" / "study"
    copy_real_series(shared_data, folder)
    write_dicom_series(folder, chest_hu(2), [0.0, 0.0], "1.2.826.0.1.3680043.8.498.60", description="Topogram",
                       image_type="ORIGINAL\\PRIMARY\\LOCALIZER", prefix="top")
    rows, stats = read_folder(folder_cfg(tmp_path / "images"))
    assert [(r["volume_id"], r["image"], r["format"]) for r in rows] == [("study", str(folder), "dicom")]
    assert stats["found"] == 1 and stats["multi_series_folders"] == 1
    (ignored,) = stats["skipped"]
    assert ignored["volume_id"] == "study" and ignored["path"] == str(folder)
    assert ignored["reason"].startswith("ignored series: 1.2.826.0.1.3680043.8.498.60 (2 images, CT CHEST Topogram)")
