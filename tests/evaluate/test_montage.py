import json

import nibabel as nib
import numpy as np
import pytest
from matplotlib.image import imread

from simcrop.data.manifest import empty_row, write_manifest
from simcrop.evaluate.montage import _pick_case, write_montage


@pytest.fixture
def preprocessed_case(tmp_path):
    """One RAS volume with a bright nodule (lesion id 2) at a known slice, its mask and its sentences."""
    image = np.full((24, 20, 12), -800, dtype=np.int16)
    mask = np.zeros_like(image)
    mask[5:8, 6:9, 9] = 2          # the nodule lies on slice z = 9
    mask[10:20, 2:18, 1:11] = 1    # a large diffuse lesion, described too: the montage prefers the nodule
    image[mask > 0] = 40
    affine = np.diag([3.0, 3.0, 6.0, 1.0])
    (tmp_path / "volumes").mkdir()
    (tmp_path / "masks").mkdir()
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "volumes" / "case_1.nii.gz")
    nib.save(nib.Nifti1Image(mask, affine), tmp_path / "masks" / "case_1.lesion.nii.gz")
    sentences = [
        {"section": "findings", "text": "Emphysema in the left lower lobe.", "start": 0, "end": 33, "lesion_ids": [1]},
        {"section": "findings", "text": "A 9 mm nodule in the right upper lobe.", "start": 34, "end": 72,
         "lesion_ids": [2]},
        {"section": "findings", "text": "No pleural effusion.", "start": 73, "end": 93, "lesion_ids": []},
    ]
    return tmp_path, sentences


def test_pick_case_cuts_through_the_smallest_described_lesion(preprocessed_case):
    folder, sentences = preprocessed_case
    axial, outline, caption = _pick_case(folder / "volumes" / "case_1.nii.gz",
                                         folder / "masks" / "case_1.lesion.nii.gz", sentences)
    assert caption == "A 9 mm nodule in the right upper lobe."
    assert outline.sum() == 9 and axial[outline].min() == 40


def test_pick_case_without_mask_uses_mid_slice_and_first_sentence(preprocessed_case):
    folder, sentences = preprocessed_case
    axial, outline, caption = _pick_case(folder / "volumes" / "case_1.nii.gz", None, sentences)
    assert outline is None and axial.shape == (24, 20)
    assert caption.startswith("Emphysema")


def test_write_montage_makes_a_png(preprocessed_case, tmp_path):
    folder, sentences = preprocessed_case
    row = empty_row()
    row.update(volume_id="case_1", patient_id="p1", scan_id="p1_a", split="train", image="x.nii.gz",
               format="nifti", source="synthetic", lesions=json.dumps([{"id": 2}]))
    manifest = tmp_path / "manifest.csv"
    write_manifest(manifest, [row])
    sentence_file = tmp_path / "sentences.jsonl"
    sentence_file.write_text(json.dumps({"volume_id": "case_1", "sentences": sentences}) + "\n")
    out = write_montage(manifest, sentence_file, folder, tmp_path / "fig" / "montage.png", n_cases=3)
    picture = imread(out)
    assert picture.ndim == 3 and picture.shape[0] > 100
    assert (picture[..., 0] > picture[..., 1] + 0.3).any(), "red lesion outline missing"


def test_write_montage_without_volumes_says_so(tmp_path):
    row = empty_row()
    row.update(volume_id="gone", patient_id="p", scan_id="p_a", split="train", image="x", format="nifti")
    write_manifest(tmp_path / "m.csv", [row])
    with pytest.raises(ValueError, match="no preprocessed volumes"):
        write_montage(tmp_path / "m.csv", tmp_path / "none.jsonl", tmp_path, tmp_path / "o.png")
