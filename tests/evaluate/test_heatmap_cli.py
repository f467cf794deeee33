"""`simcrop heatmap`: any volume + any sentence + a checkpoint → PNG + NIfTI heat map on the input's grid.

Real inputs from ../shared/data (a LPS NIfTI chest CT, a DICOM series, a COPDGene CT with its lung-region
label map), the tiny SimCroP checkpoint of conftest.py and the real MiniLM text encoder. Most tests use a
coarse preprocess spacing (6 x 6 x 12 mm: 27 tiles of the tiny model's 32 x 32 x 16 crop) to stay quick.
"""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from matplotlib.image import imread

from simcrop import cli
from simcrop.config import PreprocessConfig
from simcrop.data.volume_io import load_volume
from simcrop.evaluate.embed import encode_sentences, encode_volumes, load_model
from simcrop.evaluate.heatmap import radiological
from simcrop.evaluate.volume_heatmap import (HeatmapInputError, best_cell, cell_similarity, load_mask, paint,
                                             prepare_volume, tiling, volume_heatmaps)

COARSE = PreprocessConfig(spacing=[6.0, 6.0, 12.0])
COARSE_JSON = '{"preprocess": {"spacing": [6.0, 6.0, 12.0]}}'
CT = "ct/cip_TestInput_chestct_64x64x50.nii.gz"
COPD = "ct/cip_copdgene10002K_insp_ct64.nii.gz"
COPD_REGIONS = "ct/cip_copdgene10002K_insp_lm64_partialLungLabelMap.nii.gz"
DICOM = "dicom/lungpetctdx_A0002_B40f"
LEFT_THIRDS = (9, 10, 11)          # CIP regions: left upper / middle / lower third (12-14: right)


def test_tiling_covers_every_voxel_on_one_patch_lattice():
    layout = tiling((57, 57, 29), (32, 32, 16), (8, 8, 4))
    assert layout.padded == (64, 64, 32) and layout.before == (3, 3, 1)
    assert layout.starts == ((0, 16, 32),) * 2 + ((0, 8, 16),) and layout.n_tiles == 27
    assert layout.cells == (8, 8, 8)
    covered = np.zeros(layout.padded, dtype=int)
    for x in layout.starts[0]:
        for y in layout.starts[1]:
            for z in layout.starts[2]:
                assert x % 8 == 0 and y % 8 == 0 and z % 4 == 0
                covered[x:x + 32, y:y + 32, z:z + 16] += 1
    assert covered.min() >= 1
    small = tiling((20, 32, 40), (32, 32, 16), (8, 8, 4))      # smaller/equal: one tile, the eval chain's pad
    assert small.padded == (32, 32, 40) and small.before == (6, 0, 0) and small.starts[:2] == ((0,), (0,))


def test_raw_nifti_through_the_cli(shared_data, checkpoints, tmp_path, capsys):
    """An LPS NIfTI → PNG + float32 NIfTI with the input's shape and affine, a JSON summary, a printed line."""
    src = shared_data / CT
    out = tmp_path / "maps"
    code = cli.main(["heatmap", "--checkpoint", str(checkpoints["simcrop"]), "--volume", str(src),
                     "--text", "a mass in the left upper lobe", "--out-dir", str(out), "--set-json", COARSE_JSON])
    assert code == 0
    printed = capsys.readouterr().out
    assert "'a mass in the left upper lobe': best patch cosine" in printed and "input voxel" in printed
    nii = out / "cip_TestInput_chestct_64x64x50_1_a-mass-in-the-left-upper-lobe.nii.gz"
    png = nii.with_name(nii.name.replace(".nii.gz", ".png"))
    heat, ref = nib.load(nii), nib.load(src)
    assert heat.shape == ref.shape and np.allclose(heat.affine, ref.affine, atol=1e-4)
    assert heat.get_data_dtype() == np.float32 and nib.aff2axcodes(heat.affine) == ("L", "P", "S")
    data = np.asanyarray(heat.dataobj)
    assert np.isfinite(data).all() and data.max() > data.min()
    assert imread(png).ndim == 3
    summary = json.loads((out / "cip_TestInput_chestct_64x64x50.heatmap.json").read_text())
    assert summary["tiles"] == 27 and summary["grid"]["spacing_mm"] == [6.0, 6.0, 12.0]
    assert summary["sentences"][0]["png"] == str(png) and not list(out.glob(".*tmp*"))


def test_dicom_series_input(shared_data, checkpoints, tmp_path, text_encoder):
    """A DICOM folder: the NIfTI is on the series' own grid, with the RAS affine the loader gives."""
    src = shared_data / DICOM
    (res,) = volume_heatmaps(checkpoints["simcrop"], src, ["A right hilar mass."], tmp_path, COARSE,
                             text_encoder=text_encoder)
    volume = load_volume(src, "dicom")
    heat = nib.load(res["nifti"])
    assert heat.shape == volume.array.shape == (512, 512, 30)
    assert np.allclose(heat.affine, volume.affine, atol=1e-4)
    assert imread(res["png"]).ndim == 3 and res["cosine_max"] == pytest.approx(float(heat.get_fdata().max()))


def test_preprocessed_input_is_used_as_it_is(tiny_run, checkpoints, tmp_path, text_encoder):
    """--preprocessed: no resampling; the NIfTI is the painted patch map on the file's own grid."""
    src = tiny_run / "preprocessed" / "volumes" / "t1_a_1.nii.gz"         # 36 x 36 x 18, RAS, 3 x 3 x 6 mm
    (res,) = volume_heatmaps(checkpoints["simcrop"], src, ["Emphysema in the left lower lobe."], tmp_path,
                             PreprocessConfig(spacing=[1.0, 1.0, 1.0]), preprocessed=True, text_encoder=text_encoder)
    heat, ref = nib.load(res["nifti"]), nib.load(src)
    assert heat.shape == ref.shape == (36, 36, 18) and np.allclose(heat.affine, ref.affine)
    model, _ = load_model(checkpoints["simcrop"], text_encoder=text_encoder)
    vol = prepare_volume(src, COARSE, preprocessed=True)      # the spacing is ignored: it is preprocessed
    sentence = encode_sentences(model, ["Emphysema in the left lower lobe."])
    cells, layout = cell_similarity(model, vol.image, sentence)
    assert layout.n_tiles == 8
    np.testing.assert_allclose(heat.get_fdata(), paint(cells[0].numpy(), layout), atol=1e-6)


def test_one_tile_is_the_centre_crop_grounding_draws(tiny_run_factory, tmp_path, checkpoints, text_encoder):
    """A volume no larger than the crop is one tile: the same cosines as encode_volumes' centre crop
    (what `heatmap_for_text` and `simcrop ground` draw)."""
    run = tiny_run_factory(tmp_path / "run")
    src = run / "preprocessed" / "volumes" / "t0_a_1.nii.gz"
    small = tmp_path / "small.nii.gz"
    image = nib.load(src)
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj)[2:32, 3:31, 1:17], image.affine), small)   # 30x28x16
    model, _ = load_model(checkpoints["simcrop"], text_encoder=text_encoder)
    sentence = encode_sentences(model, ["A 20 mm nodule is seen in the right upper lobe."])
    cells, layout = cell_similarity(model, prepare_volume(small, COARSE, preprocessed=True).image, sentence)
    assert layout.n_tiles == 1
    patches = encode_volumes(model, [small], progress=False)[0]                     # (N, D), centre crop
    expected = (patches @ sentence[0]).reshape(model.encoder.grid_size)
    torch.testing.assert_close(cells[0], expected, atol=1e-5, rtol=1e-5)


def test_two_sentences_two_outputs(shared_data, checkpoints, tmp_path, text_encoder):
    texts = ["A mass in the left upper lobe.", "The heart is enlarged."]
    results = volume_heatmaps(checkpoints["simcrop"], shared_data / CT, texts, tmp_path, COARSE,
                              text_encoder=text_encoder)
    assert [r["text"] for r in results] == texts
    files = {r["png"] for r in results} | {r["nifti"] for r in results}
    assert len(files) == 4 and all(imread(r["png"]).ndim == 3 for r in results)
    a, b = (nib.load(r["nifti"]).get_fdata() for r in results)
    assert not np.allclose(a, b)
    summary = json.loads((tmp_path / "cip_TestInput_chestct_64x64x50.heatmap.json").read_text())
    assert [s["text"] for s in summary["sentences"]] == texts


def test_peak_lies_in_the_best_patch(shared_data, checkpoints, tmp_path, text_encoder):
    """The NIfTI's maximum is the best patch's cosine, and every voxel holding it maps (input affine →
    RAS → preprocessed grid) into the best patch's box; each input voxel holds the value of the
    preprocessed voxel nearest to it (checked here by hand through the affines, not with scipy)."""
    src = shared_data / CT
    (res,) = volume_heatmaps(checkpoints["simcrop"], src, ["A mass in the left upper lobe."], tmp_path, COARSE,
                             text_encoder=text_encoder)
    heat = nib.load(res["nifti"])
    data = heat.get_fdata()
    vol = prepare_volume(src, COARSE)
    to_pre = np.linalg.solve(vol.affine, heat.affine)
    peaks = np.argwhere(data == data.max())
    pre = nib.affines.apply_affine(to_pre, peaks)
    box = np.array(res["best_box"])
    assert ((pre >= box[:, 0] - 0.5) & (pre <= box[:, 1] + 0.5)).all()
    assert data.max() == pytest.approx(res["cosine_max"], abs=1e-6)
    i, j, k = res["best_input_voxel"]
    assert data[i, j, k] == data.max()
    centre = nib.affines.apply_affine(vol.affine, box.mean(axis=1))
    assert np.allclose(centre, res["best_ras_mm"], atol=0.01)
    # the whole map: input voxel → nearest preprocessed voxel, by hand
    model, _ = load_model(checkpoints["simcrop"], text_encoder=text_encoder)
    cells, layout = cell_similarity(model, vol.image, encode_sentences(model, ["A mass in the left upper lobe."]))
    painted = paint(cells[0].numpy(), layout)
    assert best_cell(cells[0].numpy(), layout)[1] == tuple(tuple(b) for b in res["best_box"])
    rng = np.random.default_rng(0)
    voxels = rng.integers(0, data.shape, size=(500, 3))
    nearest = np.rint(nib.affines.apply_affine(to_pre, voxels)).astype(int)
    nearest = np.clip(nearest, 0, np.array(painted.shape) - 1)
    np.testing.assert_allclose(data[tuple(voxels.T)], painted[tuple(nearest.T)], atol=1e-6)


def test_mask_outline_and_radiological_convention(shared_data, checkpoints, tmp_path, text_encoder):
    """The patient's left lung (CIP regions 9-11 of a real label map, on the input's LPS grid) lands on
    the image's right in the axial and coronal views; the mask option draws it."""
    regions = nib.load(shared_data / COPD_REGIONS)
    left = np.isin(np.asanyarray(regions.dataobj) % 256, LEFT_THIRDS).astype(np.uint8)
    mask = tmp_path / "left_lung.nii.gz"
    nib.save(nib.Nifti1Image(left, regions.affine), mask)
    (res,) = volume_heatmaps(checkpoints["simcrop"], shared_data / COPD, ["A mass in the left upper lobe."],
                             tmp_path / "out", COARSE, mask=mask, text_encoder=text_encoder)
    assert imread(res["png"]).ndim == 3
    on_grid = load_mask(mask, prepare_volume(shared_data / COPD, COARSE))
    assert on_grid.any()
    for fixed in (2, 1):                                   # axial (X, Y), coronal (X, Z)
        image = radiological(on_grid.any(axis=fixed))
        columns = np.nonzero(image)[1]
        assert columns.mean() > image.shape[1] / 2         # patient's left on the viewer's right
    toy = np.zeros((4, 3))
    toy[3, 0] = 1                                          # most right (RAS x high), most posterior
    assert radiological(toy)[0, 0] == 1                    # → image left, bottom row (origin "lower")


@pytest.mark.parametrize("case", ["checkpoint", "volume", "volume_kind", "sentence", "clip", "mask"])
def test_bad_inputs_name_the_file(case, shared_data, checkpoints, tmp_path, caplog):
    good = {"--checkpoint": str(checkpoints["simcrop"]), "--volume": str(shared_data / CT),
            "--text": "a mass", "--out-dir": str(tmp_path / "out")}
    extra, expect = [], ""
    if case == "checkpoint":
        good["--checkpoint"] = expect = str(tmp_path / "missing.pt")
    elif case == "volume":
        bad = tmp_path / "broken.nii.gz"
        bad.write_bytes(b"not a nifti at all")
        good["--volume"] = expect = str(bad)
    elif case == "volume_kind":
        bad = tmp_path / "scan.png"
        bad.write_bytes(b"png")
        good["--volume"] = expect = str(bad)
    elif case == "sentence":
        extra, expect = ["--text", "  "], "--text #2 is empty"
    elif case == "clip":
        good["--checkpoint"] = expect = str(checkpoints["clip"])
    elif case == "mask":
        bad = tmp_path / "mask.nii.gz"
        bad.write_text("nope")
        extra, expect = ["--mask", str(bad)], str(bad)
    argv = ["heatmap", *[x for kv in good.items() for x in kv], *extra, "--set-json", COARSE_JSON]
    assert cli.main(argv) == 1
    assert expect in caplog.text and "Traceback" not in caplog.text
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_bad_inputs_raise_the_data_error(checkpoints, tmp_path):
    with pytest.raises(HeatmapInputError, match="volume not found"):
        volume_heatmaps(checkpoints["simcrop"], tmp_path / "none.nii.gz", ["x"], tmp_path, COARSE)
    with pytest.raises(HeatmapInputError, match="at least one"):
        volume_heatmaps(checkpoints["simcrop"], tmp_path / "none.nii.gz", [], tmp_path, COARSE)
