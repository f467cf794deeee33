"""The one usable-volume filter: manifest ∩ QC ∩ preprocessed file (∩ sentences, labels, mask)."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from simcrop import layout
from simcrop.data.manifest import empty_row, write_manifest
from simcrop.data.selection import select_volumes, usable_volumes


def _nifti(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full((4, 4, 2), value, np.int16), np.eye(4)), str(path))


@pytest.fixture
def run(tmp_path):
    """v0 ok; v1 not in QC; v2 no file; v3 no Findings sentence; v4 no labels; v5 test split, lesion mask."""
    data = layout.DataDir(tmp_path)
    rows = []
    for i in range(6):
        row = empty_row()
        row.update(volume_id=f"v{i}", patient_id=f"p{i}", scan_id=f"s{i}", split="test" if i == 5 else "train",
                   image="x.nii.gz", format="nifti", findings="A nodule.",
                   labels="" if i == 4 else json.dumps({"Nodule": i % 2}))
        rows.append(row)
    write_manifest(data.manifest, rows)
    pd.DataFrame({"volume_id": [f"v{i}" for i in range(6) if i != 1]}).to_csv(data.qc, index=False)
    nifti = layout.Preprocessed(data.preprocessed.root, "nifti")     # preprocess.format: nifti
    for i in range(6):
        if i != 2:
            _nifti(nifti.volume(f"v{i}"))
    _nifti(nifti.mask("v5", "lesion"))
    sentence = [{"section": "findings", "text": "A nodule.", "start": 0, "end": 9}]
    with open(data.sentences, "w") as handle:
        for i in range(6):
            handle.write(json.dumps({"volume_id": f"v{i}", "sentences": [] if i == 3 else sentence}) + "\n")
    return data


def test_qc_and_file_in_manifest_order(run):
    sel = usable_volumes(run)
    assert sel.ids == ["v0", "v3", "v4", "v5"]
    assert sel.dropped == {"not_in_qc": 1, "missing_file": 1}
    assert sel.paths["v0"] == str(run.preprocessed.volume("v0"))


def test_split_and_needs_count_the_first_reason(run):
    sel = usable_volumes(run, "train", sentences=True, labels=True)
    assert sel.ids == ["v0"] and sel.in_split == 5
    assert sel.dropped == {"not_in_qc": 1, "no_findings_sentence": 1, "missing_file": 1, "no_labels": 1}
    assert sel.sentences["v0"][0]["text"] == "A nodule." and sel.qc["v0"]["volume_id"] == "v0"
    assert usable_volumes(run, mask="lesion").ids == ["v5"]


def test_explicit_files_and_no_qc(run):
    frame = pd.read_csv(run.manifest, dtype=str, keep_default_na=False)
    assert select_volumes(frame, None, run.preprocessed).ids == ["v0", "v1", "v3", "v4", "v5"]
    with pytest.raises(FileNotFoundError, match="simcrop gather"):
        select_volumes(frame, run.root / "none.csv", run.preprocessed)
    with pytest.raises(FileNotFoundError, match="simcrop sentences"):
        select_volumes(frame, run.qc, run.preprocessed, sentences=run.root / "none.jsonl")
