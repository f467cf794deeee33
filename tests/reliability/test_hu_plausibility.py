"""HU plausibility at the door: stored values (HU + 1024, air = 0) and volumes without any air are
quarantined with the reason; real CTs, padded scans, the synthetic corpus and the downstream sample formats
pass. Ends with a whole shard of good and bad inputs: the bad ones are set aside, no good one is lost."""
from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from volume_door import chest_hu, copy_real_series, write_dicom_series

from simcrop.config import DataConfig, PreprocessConfig, SynthesizeConfig
from simcrop.data.manifest import empty_row, write_manifest
from simcrop.data.prepare import prepare_dataset
from simcrop.data.preprocess import preprocess_shard, preprocess_volume
from simcrop.data.quarantine import BadVolume
from simcrop.data.synthetic import generate_corpus
from simcrop.data.synthetic.downstream import phantom_case, write_downstream_samples

REAL_CT = "cip_TestInput_chestct_64x64x50.nii.gz"
COARSE = dict(spacing=[9.0, 9.0, 12.0])
STORED = r"implausible HU: no air \(0\.00% of voxels in \[-1100, -500\] HU outside padding; .*air and soft tissue 1024 too high, " \
         r"stored values \(HU \+ 1024, air = 0\) read as HU without the rescale intercept"


def row(volume_id, image, fmt="nifti", **extra) -> dict:
    r = empty_row()
    r.update(volume_id=volume_id, patient_id=volume_id, scan_id=volume_id, split="train",
             image=str(image), format=fmt, source="test", **extra)
    return r


def _save(path, array, affine=np.diag([-1.5, -1.5, 3.0, 1.0])):
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def _real_ct(shared_data):
    image = nib.load(shared_data / "ct" / REAL_CT)
    return np.asanyarray(image.dataobj), image.affine


@pytest.mark.parametrize("padding", [None, -2000])
def test_stored_values_are_quarantined_with_the_offset_named(shared_data, tmp_path, padding):
    hu, affine = _real_ct(shared_data)
    stored = (hu.astype(np.int32) + 1024).clip(0).astype(np.uint16 if padding is None else np.int16)
    if padding is not None:                       # stored values padded outside the field of view
        stored[:6] = padding
    path = _save(tmp_path / "stored.nii.gz", stored, affine)
    # before: accepted as HU (air at 0, soft tissue at 1064), only QC's missing lung air hinted at it
    with pytest.raises(BadVolume, match=STORED):
        preprocess_volume(row("stored", path), tmp_path / "out", PreprocessConfig(**COARSE))
    assert not (tmp_path / "out" / "volumes").exists()


def test_volume_without_any_air_is_quarantined(shared_data, tmp_path):
    hu, affine = _real_ct(shared_data)
    path = _save(tmp_path / "windowed.nii.gz", np.clip(hu, -300, None), affine)   # air cut away
    with pytest.raises(BadVolume, match=r"implausible HU: no air \(0\.00% of voxels in \[-1100, -500\] HU outside padding; values "
                                        r"-300 to \d+\); a CT holds air around the body or in the lungs"):
        preprocess_volume(row("windowed", path), tmp_path / "out", PreprocessConfig(**COARSE))


@pytest.mark.parametrize("padding", [-1024, -2048, -3024])
def test_padded_real_ct_passes(shared_data, tmp_path, padding):
    hu, affine = _real_ct(shared_data)
    padded = np.full((hu.shape[0] + 40, hu.shape[1] + 40, hu.shape[2]), padding, np.int16)
    padded[20:-20, 20:-20] = hu                    # a wide border outside the field of view
    path = _save(tmp_path / "padded.nii.gz", padded, affine)
    record = preprocess_volume(row("padded", path), tmp_path / "out", PreprocessConfig(**COARSE))
    assert record["hu_p1"] < -800


def test_synthetic_corpus_and_downstream_formats_pass(tmp_path):
    """The shipped synthetic corpus (CT-RATE v2 layout) and every downstream sample format, through the
    real adapters and preprocessing: nothing is quarantined."""
    corpus = tmp_path / "corpus"
    generate_corpus(corpus, SynthesizeConfig(seed=0, workers=1, n_patients=6, valid_fraction=0.2, max_scans=1,
                                             max_reconstructions=1, preset="small"), progress=False)
    roots = {"synthetic": str(corpus), **write_downstream_samples(tmp_path / "downstream", seed=5, n_cases=3)}
    for dataset, root in roots.items():
        summary = prepare_dataset(DataConfig(dataset=dataset, root=root), PreprocessConfig(**COARSE, shard_size=8),
                                  tmp_path / dataset, progress=False)
        quarantine = pd.read_csv(tmp_path / dataset / "quarantine.csv", dtype=str)
        assert summary["preprocess"]["quarantined"] == 0, (dataset, quarantine["reason"].tolist())
        assert summary["preprocess"]["ok"] >= 3, dataset       # the corpus leaves a few out on purpose


def test_shard_quarantines_door_problems_and_keeps_every_good_volume(shared_data, tmp_path):
    """One shard: good NIfTI, real DICOM and a multi-series study folder beside a stored-value volume, an
    airless one, a DICOM series with a missing and one with a duplicated slice, a NIfTI with vox_offset 0
    and a tiny NIfTI-2 claiming 6.5 GB. Each bad one is quarantined naming its problem; every good one is
    written."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    hu, affine = _real_ct(shared_data)
    good = {"real_nifti": (shared_data / "ct" / REAL_CT, "nifti"),
            "real_dicom": (shared_data / "dicom" / "lungpetctdx_A0002_B40f", "dicom"),
            "phantom": (_save(inputs / "phantom.nii.gz", phantom_case(seed=1, index=0)["hu"]), "nifti")}
    study = copy_real_series(shared_data, inputs / "study")
    write_dicom_series(study, chest_hu(2), [0.0, 0.0], "1.2.826.0.1.3680043.8.498.50",
                       image_type="ORIGINAL\\PRIMARY\\LOCALIZER", prefix="top")
    good["study"] = (study, "dicom")

    bad = {"stored": (_save(inputs / "stored.nii.gz", (hu.astype(np.int32) + 1024).clip(0).astype(np.uint16),
                            affine), "nifti", "implausible HU: no air", "stored values (HU + 1024"),
           "airless": (_save(inputs / "airless.nii.gz", np.clip(hu, -300, None), affine), "nifti",
                       "implausible HU: no air", "a CT holds air")}
    gap = copy_real_series(shared_data, inputs / "gap")
    (gap / "1-15.dcm").unlink()
    bad["gap"] = (gap, "dicom", "missing slice: 16 mm gap", "1-16.dcm and 1-14.dcm")
    dup = copy_real_series(shared_data, inputs / "dup")
    (dup / "1-07b.dcm").write_bytes((dup / "1-07.dcm").read_bytes())
    bad["dup"] = (dup, "dicom", "duplicated slice: ", "1-07.dcm and 1-07b.dcm")
    data = bytearray(nib.Nifti1Image(hu, affine).to_bytes())
    data[108:112] = np.float32(0).tobytes()                    # vox_offset (float32 at byte 108) = 0
    (inputs / "offset0.nii").write_bytes(bytes(data))
    bad["offset0"] = (inputs / "offset0.nii", "nifti", "bad header: vox_offset 0 < 352", "read as voxels")
    header = nib.Nifti2Header()
    header.set_data_shape((1800, 1800, 1000))
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 544
    (inputs / "claim.nii.gz").write_bytes(gzip.compress(header.binaryblock + b"\0" * 4, 9, mtime=0))
    bad["claim"] = (inputs / "claim.nii.gz", "nifti", "bad header: claims 1800x1800x1000 int16", "gzip file")

    rows = [row(v, p, fmt) for v, (p, fmt) in good.items()] + [row(v, p, fmt) for v, (p, fmt, *_ ) in bad.items()]
    write_manifest(tmp_path / "manifest.csv", rows)
    result = preprocess_shard(tmp_path / "manifest.csv", 0, tmp_path / "out",
                              PreprocessConfig(**COARSE, shard_size=len(rows)), progress=False)
    assert (result["ok"], result["bad"]) == (len(good), len(bad))
    reasons = dict(pd.read_csv(result["quarantine"], dtype=str).set_index("volume_id")["reason"])
    for volume_id, (_, _, start, detail) in bad.items():
        assert reasons[volume_id].startswith(start) and detail in reasons[volume_id], (volume_id, reasons[volume_id])
    assert sorted(pd.read_csv(result["qc"], dtype={"volume_id": str})["volume_id"]) == sorted(good)
    assert all((tmp_path / "out" / "volumes" / f"{v}.b2nd").exists() for v in good)     # preprocess.format
