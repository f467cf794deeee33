import json
import shutil

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from simcrop.config import DataConfig, PreprocessConfig
from simcrop.data.adapters.luna16 import read_luna16
from simcrop.data.downstream_labels import LUNA16_ORGANS
from simcrop.data.ingest import ingest
from simcrop.data.manifest import MANIFEST_COLUMNS, read_manifest
from simcrop.data.preprocess import preprocess_volume
from simcrop.data.synthetic.downstream import write_luna16
from simcrop.data.volume_io import load_itk, load_nifti
from simcrop.data.preprocessed_io import read_preprocessed


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("luna16")
    write_luna16(root, seed=0, n_cases=6)
    return root


def test_synthetic_sample_rows(sample, tmp_path):
    rows, stats = read_luna16(sample, mask_dir=tmp_path / "masks")
    assert len(rows) == 6 and all(set(r) == set(MANIFEST_COLUMNS) for r in rows)
    annotated = set(pd.read_csv(sample / "annotations.csv")["seriesuid"])
    assert {r["volume_id"] for r in rows if json.loads(r["labels"]) == {"nodule": 1}} == annotated
    assert [r["split"] for r in rows].count("test") == 2                  # subset9
    assert (stats["masks_found"], stats["masks_written"], stats["with_nodule"]) == (6, 6, 3)
    assert all(r["format"] == "mhd" and r["organ_mask"].endswith(".organ.nii.gz") for r in rows)
    # rerun reuses the written masks
    assert read_luna16(sample, mask_dir=tmp_path / "masks")[1]["masks_written"] == 0


def test_mask_remap_on_image_grid(sample, tmp_path):
    row = read_luna16(sample, mask_dir=tmp_path / "masks")[0][0]
    image, mask = load_itk(row["image"]), load_nifti(row["organ_mask"])
    source = sitk.GetArrayFromImage(sitk.ReadImage(str(sample / "seg-lungs-LUNA16" / f"{row['volume_id']}.mhd")))
    assert mask.array.shape == image.array.shape and np.allclose(mask.affine, image.affine)
    assert set(np.unique(mask.array)) == {0, *LUNA16_ORGANS.values()}
    assert np.array_equal(mask.array == LUNA16_ORGANS["left_lung"], source.transpose(2, 1, 0) == 3)
    # the left lung lies on the patient's left: RAS x < 0 of the right lung's
    centre = {k: (image.affine @ [*np.argwhere(mask.array == v).mean(axis=0), 1])[0] for k, v in LUNA16_ORGANS.items()}
    assert centre["left_lung"] < centre["right_lung"]


def test_nodule_world_coordinates_hit_the_nodule(sample):
    first = pd.read_csv(sample / "annotations.csv").iloc[0]
    path = next(sample.glob(f"subset*/{first['seriesuid']}.mhd"))
    image = sitk.ReadImage(str(path))
    index = image.TransformPhysicalPointToIndex((first["coordX"], first["coordY"], first["coordZ"]))
    assert 0 <= image[index] <= 100        # the planted soft-tissue sphere, inside lung


def test_ingest_and_preprocess(sample, tmp_path):
    report = ingest(DataConfig(dataset="luna16", root=str(sample), val_fraction=0.25),
                    tmp_path / "manifest.csv", tmp_path / "report.json")
    assert report["splits"]["test"]["volumes"] == 2 and report["masks_written"] == 6
    frame = read_manifest(tmp_path / "manifest.csv")
    record = preprocess_volume(frame.iloc[0], tmp_path / "pre", PreprocessConfig(spacing=[9.0, 9.0, 12.0]))
    assert set(np.unique(read_preprocessed(record["organ_output"]))) == {0, 1, 2, 3}


def test_mhd_without_raw(sample, tmp_path):
    root = tmp_path / "luna"
    (root / "subset0").mkdir(parents=True)
    shutil.copy(sample / "annotations.csv", root)
    header = next((sample / "subset0").glob("*.mhd"))
    shutil.copy(header, root / "subset0")
    with pytest.raises(ValueError, match=rf"{header.name}: data file .*\.raw \(ElementDataFile\) not found"):
        read_luna16(root)


def test_annotations_missing_column(sample, tmp_path):
    (tmp_path / "subset0").mkdir()
    pd.read_csv(sample / "annotations.csv").drop(columns=["diameter_mm"]).to_csv(tmp_path / "annotations.csv")
    with pytest.raises(ValueError, match=r"annotations\.csv: missing required columns \['diameter_mm'\]"):
        read_luna16(tmp_path)
    (tmp_path / "annotations.csv").unlink()
    with pytest.raises(ValueError, match=r"annotations\.csv: LUNA16 annotations CSV not found"):
        read_luna16(tmp_path)
