"""Preprocessing: geometry in world mm, quarantine of bad inputs, v1/v2 rescaling, real CTs, masks."""
from __future__ import annotations

import gzip
import json
import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from simcrop.config import PreprocessConfig
from simcrop.data.manifest import empty_row, write_manifest
from simcrop.data.preprocess import (QC_COLUMNS, TooManyBadVolumes, gather_shards, preprocess_shard,
                                     preprocess_volume)
from simcrop.data.qc import body_mask
from simcrop.data.quarantine import QUARANTINE_COLUMNS, BadVolume
from simcrop.data.preprocessed_io import open_preprocessed, read_preprocessed
from simcrop.layout import VOLUME_FORMATS, DataDir, Preprocessed

CENTRE = np.array([12.3, -20.7, 35.1])          # world mm (RAS) of the planted sphere
RADIUS = 9.0


def row(volume_id, image, fmt="nifti", **extra) -> dict:
    r = empty_row()
    r.update(volume_id=volume_id, patient_id=volume_id, scan_id=volume_id, split="train",
             image=str(image), format=fmt, source="test", **extra)
    return r


class Output:
    """A preprocessed output (either format) through the one reader: shape, affine, voxels."""

    def __init__(self, path):
        header = open_preprocessed(path)
        self.shape, self.affine, self.data = header.shape, header.affine, read_preprocessed(path)


def sphere_volume(affine, shape) -> np.ndarray:
    """int16 HU: soft tissue (40) with a bone-dense sphere (600) at CENTRE and an air band (-1000)."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    world = index @ affine[:3, :3].T + affine[:3, 3]
    volume = np.full(shape, 40, np.int16)
    volume[np.linalg.norm(world - CENTRE, axis=-1) <= RADIUS] = 600
    volume[world[..., 0] > CENTRE[0] + 25] = -1000
    return volume


def affine_with_centre(columns, shape) -> np.ndarray:
    """Affine with the given 3 x 3 `columns` whose middle voxel lands near CENTRE (+ an offset)."""
    affine = np.eye(4)
    affine[:3, :3] = columns
    affine[:3, 3] = CENTRE + [3.0, -2.0, 4.0] - affine[:3, :3] @ (np.asarray(shape) / 2)
    return affine


GEOMETRIES = {
    "lps_anisotropic": (np.diag([-0.8, -1.1, 2.5]), (70, 60, 24)),
    "ras": (np.diag([1.2, 0.9, 2.0]), (50, 70, 30)),
    "permuted_zxy": (np.array([[0, -0.9, 0], [0, 0, 1.3], [2.0, 0, 0]], float), (30, 60, 50)),
}


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
@pytest.mark.parametrize("size", [None, (37, 30, 41)])
@pytest.mark.parametrize("fmt", VOLUME_FORMATS)
def test_sphere_lands_at_its_world_coordinate(tmp_path, name, size, fmt):
    columns, shape = GEOMETRIES[name]
    affine = affine_with_centre(columns, shape)
    path = tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(sphere_volume(affine, shape), affine), path)
    cfg = PreprocessConfig(spacing=[1.5, 1.5, 2.0], size=None if size is None else list(size), format=fmt)
    record = preprocess_volume(row(name, path), tmp_path / "out", cfg)

    assert record["output"].endswith({"b2nd": ".b2nd", "nifti": ".nii.gz"}[fmt])
    out = Output(record["output"])
    assert nib.aff2axcodes(out.affine) == ("R", "A", "S")
    np.testing.assert_allclose(out.affine[:3, :3], np.diag(cfg.spacing), atol=1e-6)
    if size is not None:
        assert out.shape == size
    data = out.data
    assert data.dtype == np.int16 and data.min() >= -1000 and data.max() <= 1000
    weights = np.clip(data.astype(float) - 320, 0, None)        # half-way between tissue and sphere
    centroid = (np.argwhere(weights > 0) * weights[weights > 0][:, None]).sum(0) / weights.sum()
    world = out.affine[:3, :3] @ centroid + out.affine[:3, 3]
    assert np.linalg.norm(world - CENTRE) < max(cfg.spacing)
    assert record["input_orientation"] == "".join(nib.aff2axcodes(affine))
    assert record["output_spacing"] == "1.5000x1.5000x2.0000"


def _good_ct(shape=(24, 20, 12), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    volume = np.full(shape, -1000, np.int16)
    volume[3:-3, 3:-3, :] = rng.integers(-900, 200, size=(shape[0] - 6, shape[1] - 6, shape[2]))
    return volume


def _bad_inputs(folder):
    """{volume_id: (path, expected reason category)} of one file per kind of bad input."""
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([-1.5, -1.5, 3.0, 1.0])
    bad = {}

    good = folder / "truncated.nii.gz"
    nib.save(nib.Nifti1Image(_good_ct(), affine), good)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    bad["truncated"] = (good, "unreadable")

    nan = _good_ct().astype(np.float32)
    nan[5, 5, 5] = np.nan
    nib.save(nib.Nifti1Image(nan, affine), folder / "nan.nii.gz")
    bad["nan_voxels"] = (folder / "nan.nii.gz", "non-finite voxels")

    nib.save(nib.Nifti1Image(np.zeros((24, 0, 12), np.int16), affine), folder / "empty.nii.gz")
    bad["empty"] = (folder / "empty.nii.gz", "zero-length axis")

    image8 = np.random.default_rng(1).integers(0, 256, size=(24, 20, 12)).astype(np.uint8)
    nib.save(nib.Nifti1Image(image8, affine), folder / "eightbit.nii.gz")
    bad["eightbit"] = (folder / "eightbit.nii.gz", "looks like 8-bit image")

    for name, spacing in (("spacing0", 0.0), ("spacing500", 500.0)):
        image = nib.Nifti1Image(_good_ct(), None)                # no q/sform: geometry from pixdim
        image.header.set_zooms((1.0, 1.0, spacing))
        nib.save(image, folder / f"{name}.nii.gz")
        bad[name] = (folder / f"{name}.nii.gz", "impossible spacing")

    nib.save(nib.Nifti1Image(np.full((24, 20, 12), -1000, np.int16), affine), folder / "constant.nii.gz")
    bad["constant"] = (folder / "constant.nii.gz", "constant volume")

    (folder / "garbage.nii.gz").write_bytes(b"this is not a nifti file")
    bad["garbage"] = (folder / "garbage.nii.gz", "unreadable")
    return bad


def test_shard_quarantines_each_bad_input_and_finishes_the_good_ones(tmp_path):
    inputs = tmp_path / "in"
    bad = _bad_inputs(inputs)
    rows = []
    for i in range(3):
        path = inputs / f"good{i}.nii.gz"
        nib.save(nib.Nifti1Image(_good_ct(seed=i), np.diag([-1.5, -1.5, 3.0, 1.0])), path)
        rows.append(row(f"good{i}", path))
    rows += [row(volume_id, path) for volume_id, (path, _) in bad.items()]
    manifest = tmp_path / "manifest.csv"
    write_manifest(manifest, rows)
    out = tmp_path / "out"
    cfg = PreprocessConfig(spacing=[3.0, 3.0, 6.0], shard_size=len(rows))

    result = preprocess_shard(manifest, 0, out, cfg, progress=False)
    assert (result["ok"], result["bad"]) == (3, len(bad))
    quarantine = pd.read_csv(result["quarantine"], dtype=str, keep_default_na=False)
    assert list(quarantine.columns) == QUARANTINE_COLUMNS
    assert set(quarantine["stage"]) == {"preprocess"}
    reasons = dict(zip(quarantine["volume_id"], quarantine["reason"]))
    for volume_id, (_, category) in bad.items():
        assert reasons[volume_id].startswith(category), (volume_id, reasons[volume_id])
    qc = pd.read_csv(result["qc"])
    assert list(qc.columns) == QC_COLUMNS and sorted(qc["volume_id"]) == ["good0", "good1", "good2"]
    written = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert written == sorted(["00000.qc.csv", "00000.quarantine.csv"]
                             + [f"good{i}.b2nd" for i in range(3)] + [f"good{i}.json" for i in range(3)])

    # gather: 8 of 11 bad is over a 0.25 limit → files first, then a clear error
    tables = DataDir(out)
    files = dict(qc_out=tables.qc, quarantine_out=tables.quarantine, summary_out=tables.preprocess_summary)
    with pytest.raises(TooManyBadVolumes, match="max_bad_fraction"):
        gather_shards([result["qc"]], [result["quarantine"]], max_bad_fraction=0.25, **files)
    summary = json.loads(files["summary_out"].read_text())
    assert (summary["ok"], summary["quarantined"], summary["volumes"]) == (3, len(bad), 3 + len(bad))
    assert summary["reasons"]["impossible spacing"] == 2 and summary["reasons"]["unreadable"] == 2
    assert len(pd.read_csv(files["qc_out"])) == 3
    assert gather_shards([result["qc"]], [result["quarantine"]], max_bad_fraction=0.9, **files)["ok"] == 3


def test_shards_split_rows_resume_and_write_empty_tables(tmp_path):
    rows = []
    for i in range(3):
        path = tmp_path / f"v{i}.nii.gz"
        nib.save(nib.Nifti1Image(_good_ct(seed=i), np.diag([1.5, 1.5, 3.0, 1.0])), path)
        rows.append(row(f"v{i}", path))
    manifest = tmp_path / "manifest.csv"
    write_manifest(manifest, rows)
    cfg = PreprocessConfig(spacing=[3.0, 3.0, 6.0], shard_size=2)
    out = tmp_path / "out"
    first = preprocess_shard(manifest, 1, out, cfg, progress=False)
    assert (first["rows"], first["ok"], first["bad"]) == (1, 1, 0)
    assert pd.read_csv(first["quarantine"]).empty                    # written even when empty
    with pytest.raises(ValueError, match="out of range"):
        preprocess_shard(manifest, 2, out, cfg, progress=False)

    output = Preprocessed(out).volume("v2")
    stamp = output.stat().st_mtime_ns
    again = preprocess_shard(manifest, 1, out, cfg, progress=False)
    assert again["resumed"] == 1 and output.stat().st_mtime_ns == stamp
    qc = pd.read_csv(again["qc"])
    assert qc.loc[0, "resumed"] == 1
    assert qc.loc[0, "output_shape"] == pd.read_csv(first["qc"]).loc[0, "output_shape"]

    cfg.hu_window = [-1000.0, 500.0]                                 # other settings → redone
    assert preprocess_shard(manifest, 1, out, cfg, progress=False)["resumed"] == 0
    stamp = output.stat().st_mtime_ns
    assert preprocess_shard(manifest, 1, out, cfg, progress=False)["resumed"] == 1
    os.utime(rows[2]["image"])                                       # input changed → redone
    os.utime(output, ns=(stamp - 10**10, stamp - 10**10))
    assert preprocess_shard(manifest, 1, out, cfg, progress=False)["resumed"] == 0
    record_path = Preprocessed(out).qc_record("v2")                 # made by an older resampling method
    record = json.loads(record_path.read_text())
    record["params"]["method"] -= 1
    record_path.write_text(json.dumps(record))
    assert preprocess_shard(manifest, 1, out, cfg, progress=False)["resumed"] == 0


def test_v1_rescale_applied_once_and_v2_never(tmp_path):
    hu = _good_ct(shape=(16, 14, 10))
    hu[2, 3, 4] = 777                                     # marker
    stored = (hu.astype(np.int32) + 1024).astype(np.uint16)
    v1 = tmp_path / "v1.nii.gz"
    nib.save(nib.Nifti1Image(stored, np.eye(4)), v1)     # v1: no geometry in the header
    v2 = tmp_path / "v2.nii.gz"
    nib.save(nib.Nifti1Image(hu, np.diag([-0.7, -0.7, 1.5, 1.0])), v2)
    cfg = PreprocessConfig(spacing=[0.7, 0.7, 1.5], hu_window=[-1024, 3071])   # identity resampling
    common = dict(rescale_slope=1.0, rescale_intercept=-1024.0, spacing_x=0.7, spacing_y=0.7, spacing_z=1.5)
    rec1 = preprocess_volume(row("v1", v1, release="v1", apply_rescale=1, spacing_source="metadata",
                                 **common), tmp_path / "out", cfg)
    rec2 = preprocess_volume(row("v2", v2, release="v2", apply_rescale=0, **common), tmp_path / "out", cfg)
    assert (rec1["rescaled"], rec2["rescaled"]) == (1, 0)
    for record in (rec1, rec2):
        out = Output(record["output"])
        np.testing.assert_allclose(out.affine[:3, :3], np.diag([0.7, 0.7, 1.5]), atol=1e-6)
        # v1 axes are LPS: RAS output = input flipped in x and y
        np.testing.assert_array_equal(out.data, hu[::-1, ::-1, :])

    scaled = (hu.astype(np.float32) + 2048) / 2                        # slope 2, intercept -2048
    v1b = tmp_path / "v1b.nii.gz"
    nib.save(nib.Nifti1Image(scaled.astype(np.float32), np.eye(4)), v1b)
    rec = preprocess_volume(row("v1b", v1b, apply_rescale=1, spacing_source="metadata", **{
        **common, "rescale_slope": 2.0, "rescale_intercept": -2048.0}), tmp_path / "out", cfg)
    np.testing.assert_array_equal(read_preprocessed(rec["output"]), hu[::-1, ::-1, :])


@pytest.mark.parametrize("fmt", VOLUME_FORMATS)
def test_masks_keep_labels_and_share_the_image_grid(tmp_path, fmt):
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    image = _good_ct(shape=(40, 36, 14))
    organ = np.zeros(image.shape, np.uint16)
    organ[5:20, 5:30, 2:10] = 3
    organ[22:35, 5:30, 2:10] = 300
    lesion = np.zeros(image.shape, np.uint8)
    lesion[10:14, 10:14, 5:7] = 1
    paths = {}
    for name, array in (("image", image), ("organ", organ), ("lesion", lesion)):
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(array, affine), paths[name])
    cfg = PreprocessConfig(spacing=[1.3, 1.1, 2.0], size=[20, 40, 16], format=fmt)
    record = preprocess_volume(row("m", paths["image"], organ_mask=str(paths["organ"]),
                                   lesion_mask=str(paths["lesion"])), tmp_path / "out", cfg)
    out = Output(record["output"])
    for kind, labels in (("organ", {0, 3, 300}), ("lesion", {0, 1})):
        assert record[f"{kind}_output"] == str(Preprocessed(tmp_path / "out", fmt).mask("m", kind))
        mask = Output(record[f"{kind}_output"])
        assert mask.shape == out.shape and np.allclose(mask.affine, out.affine)
        assert set(np.unique(mask.data).tolist()) == labels
    # the organ with label 3 is at high input i = patient left = low RAS x; label 300 at patient right
    organ_out = Output(record["organ_output"]).data
    assert np.argwhere(organ_out == 3)[:, 0].mean() > np.argwhere(organ_out == 300)[:, 0].mean()


def test_mask_shape_mismatch_is_bad(tmp_path):
    image, mask = tmp_path / "i.nii.gz", tmp_path / "m.nii.gz"
    nib.save(nib.Nifti1Image(_good_ct(), np.eye(4)), image)
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), np.eye(4)), mask)
    with pytest.raises(BadVolume, match="mask mismatch"):
        preprocess_volume(row("i", image, organ_mask=str(mask)), tmp_path / "out", PreprocessConfig())
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- real data (../shared/data)

def _spine_is_posterior(data: np.ndarray) -> bool:
    """RAS: anterior is high y, so midline bone (the spine) sits below the body's centre in y."""
    body = body_mask(data)
    centre = np.argwhere(body).mean(0)
    bone = np.argwhere((data > 300) & body)
    bone = bone[np.abs(bone[:, 0] - centre[0]) < 0.08 * data.shape[0]]
    return bone[:, 1].mean() < centre[1] - 0.1 * data.shape[1]


def test_real_chest_ct_lps_to_ras(shared_data, tmp_path):
    path = shared_data / "ct" / "cip_TestInput_chestct_64x64x50.nii.gz"
    record = preprocess_volume(row("cip", path), tmp_path, PreprocessConfig())
    assert record["input_orientation"] == "LPS" and record["input_shape"] == "64x64x50"
    out = Output(record["output"])
    assert nib.aff2axcodes(out.affine) == ("R", "A", "S")
    data = out.data
    assert _spine_is_posterior(data)
    # measured: p1 -987, p50 -94, lung-air 0.22, body 0.68
    assert record["hu_p1"] < -900 and -200 < record["hu_p50"] < 100 and record["hu_p99"] > 200
    assert 0.12 < record["lung_air_fraction"] < 0.35 and 0.4 < record["body_fraction"] < 0.9


def test_real_copdgene_lung_regions_land_on_the_right_sides(shared_data, tmp_path):
    ct = shared_data / "ct" / "cip_copdgene10002K_insp_ct64.nii.gz"
    regions = shared_data / "ct" / "cip_copdgene10002K_insp_lm64_partialLungLabelMap.nii.gz"
    lung = shared_data / "ct" / "cip_copdgene10002K_insp_wholeLung64.nii.gz"
    record = preprocess_volume(row("copd", ct, organ_mask=str(regions), lesion_mask=str(lung)), tmp_path,
                               PreprocessConfig())
    data = read_preprocessed(record["output"])
    assert _spine_is_posterior(data)
    assert record["hu_p1"] < -900 and -200 < record["hu_p50"] < 100      # measured -965, -100
    assert 0.12 < record["lung_air_fraction"] < 0.35                     # measured 0.24
    region = read_preprocessed(record["organ_output"]) % 256
    # ChestImagingPlatform regions: 9-11 left upper/middle/lower third, 12-14 right thirds
    left, right = np.argwhere(np.isin(region, (9, 10, 11))), np.argwhere(np.isin(region, (12, 13, 14)))
    assert right[:, 0].mean() > left[:, 0].mean() + 20                   # RAS: +x is the patient's right
    assert len(right) > len(left)                                         # the right lung is larger
    upper, lower = np.argwhere(np.isin(region, (9, 12))), np.argwhere(np.isin(region, (11, 14)))
    assert upper[:, 2].mean() > lower[:, 2].mean() + 10                   # +z superior
    lung_out = read_preprocessed(record["lesion_output"])
    assert set(np.unique(lung_out).tolist()) == {0, 1} and np.median(data[lung_out > 0]) < -800


def test_real_dicom_series_through_simpleitk(shared_data, tmp_path):
    folder = shared_data / "dicom" / "lungpetctdx_A0002_B40f"
    before = sorted(os.listdir(folder))
    record = preprocess_volume(row("dcm", folder, fmt="dicom"), tmp_path, PreprocessConfig())
    assert sorted(os.listdir(folder)) == before                         # read in place, untouched
    assert record["input_shape"] == "512x512x30" and record["input_spacing"] == "0.6465x0.6465x8.0000"
    out = Output(record["output"])
    # 29 gaps x 8 mm = 232 mm of slice centres: 39 slices of 6 mm fit (MONAI's 40th would sit at 234 mm)
    assert nib.aff2axcodes(out.affine) == ("R", "A", "S") and out.shape == (111, 111, 39)
    assert _spine_is_posterior(out.data)
    assert record["hu_p1"] < -850 and -200 < record["hu_p50"] < 100      # measured -926, -60
    assert 0.08 < record["lung_air_fraction"] < 0.35                     # measured 0.18


def test_gather_with_no_volumes_writes_empty_tables(tmp_path):
    empty_qc, empty_q = tmp_path / "a.qc.csv", tmp_path / "a.quarantine.csv"
    pd.DataFrame(columns=QC_COLUMNS).to_csv(empty_qc, index=False)
    pd.DataFrame(columns=QUARANTINE_COLUMNS).to_csv(empty_q, index=False)
    summary = gather_shards([empty_qc], [empty_q], tmp_path / "qc.csv", tmp_path / "q.csv",
                            tmp_path / "s.json", 0.25)
    assert summary["volumes"] == 0 and summary["bad_fraction"] == 0.0
    assert list(pd.read_csv(tmp_path / "qc.csv").columns) == QC_COLUMNS


def test_written_volume_is_valid_gzip(tmp_path):
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(_good_ct(), np.eye(4)), path)
    record = preprocess_volume(row("v", path), tmp_path / "out", PreprocessConfig(compress_level=1, format="nifti"))
    with gzip.open(record["output"]) as handle:
        assert len(handle.read()) == 352 + 2 * int(np.prod(nib.load(record["output"]).shape))


def test_gather_cli_stops_in_one_line_past_max_bad_fraction(tmp_path):
    """A small dataset with two bad volumes of three: one line naming the fraction, the limit and the
    quarantine file, a non-zero exit, and the tables written first (no traceback)."""
    import subprocess
    import sys

    run = DataDir(tmp_path)
    run.preprocessed.shards.mkdir(parents=True)
    qc = {c: [0] for c in QC_COLUMNS}
    qc["volume_id"] = ["good"]
    pd.DataFrame(qc).to_csv(run.preprocessed.shard_qc(0), index=False)
    pd.DataFrame([{"volume_id": v, "path": f"{v}.nii.gz", "stage": "preprocess", "reason": "constant volume: -1000"}
                  for v in ("bad1", "bad2")], columns=QUARANTINE_COLUMNS).to_csv(run.preprocessed.shard_quarantine(0),
                                                                                   index=False)
    result = subprocess.run([sys.executable, "-m", "simcrop.cli", "gather", "--set-json",
                             '{"preprocess": {"max_bad_fraction": 0.25}}', "--out-dir", str(tmp_path),
                             str(run.preprocessed.shard_qc(0))], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    assert "2 of 3 volumes quarantined (66.7%) > max_bad_fraction 25.0%" in errors[0]
    assert str(run.quarantine) in errors[0]
    assert len(pd.read_csv(run.quarantine)) == 2


# ---------------------------------------------------------------- the training cache (preprocess.format)

def test_cache_file_is_int16_lz4hc_shuffle_chunked_with_its_geometry_inside(tmp_path):
    import blosc2

    from simcrop.data.preprocessed_io import CACHE_BLOCKS, CACHE_CHUNKS

    path = tmp_path / "v.nii.gz"
    affine = np.diag([-1.5, -1.5, 3.0, 1.0])
    nib.save(nib.Nifti1Image(_good_ct(shape=(96, 90, 40)), affine), path)
    record = preprocess_volume(row("v", path), tmp_path / "out", PreprocessConfig(spacing=[1.0, 1.0, 2.0]))
    assert record["output"] == str(Preprocessed(tmp_path / "out").volume("v")) and record["output"].endswith(".b2nd")
    stored = blosc2.open(record["output"], mode="r")
    assert stored.dtype == np.int16 and min(stored.shape) > 50
    assert stored.chunks == tuple(min(n, c) for n, c in zip(stored.shape, CACHE_CHUNKS))
    assert stored.blocks == tuple(min(c, b) for c, b in zip(stored.chunks, CACHE_BLOCKS))
    assert stored.cparams.codec == blosc2.Codec.LZ4HC and stored.cparams.filters[0] == blosc2.Filter.SHUFFLE
    meta = stored.schunk.vlmeta["simcrop"]
    assert meta["spacing"] == [1.0, 1.0, 2.0] and meta["source"] == str(path)
    nifti = preprocess_volume(row("v", path), tmp_path / "nifti", PreprocessConfig(spacing=[1.0, 1.0, 2.0],
                                                                                   format="nifti"))
    reference = nib.load(nifti["output"])                # the same volume written as NIfTI: same voxels, affine
    np.testing.assert_allclose(meta["affine"], reference.affine, atol=1e-6)
    assert nib.aff2axcodes(np.asarray(meta["affine"])) == ("R", "A", "S")
    np.testing.assert_array_equal(read_preprocessed(record["output"]), np.asanyarray(reference.dataobj))
    np.testing.assert_allclose(open_preprocessed(record["output"]).affine, reference.affine, atol=1e-6)


def test_a_format_change_redoes_the_volume_and_leaves_one_version(tmp_path):
    image, mask = tmp_path / "v.nii.gz", tmp_path / "m.nii.gz"
    nib.save(nib.Nifti1Image(_good_ct(seed=1), np.diag([1.5, 1.5, 3.0, 1.0])), image)
    nib.save(nib.Nifti1Image((_good_ct(seed=1) > 0).astype(np.uint8), np.diag([1.5, 1.5, 3.0, 1.0])), mask)
    manifest = tmp_path / "manifest.csv"
    write_manifest(manifest, [row("v", image, lesion_mask=str(mask))])
    out = tmp_path / "out"
    reader = Preprocessed(out)                          # what every reader sees: whichever format is there
    def names():
        return sorted(p.name for p in (out / "volumes").iterdir()) + sorted(p.name for p in (out / "masks").iterdir())

    runs = []
    for fmt in ("nifti", "nifti", "b2nd", "b2nd", "nifti"):
        cfg = PreprocessConfig(spacing=[3.0, 3.0, 6.0], format=fmt)
        runs.append(preprocess_shard(manifest, 0, out, cfg, progress=False)["resumed"])
        suffix = Preprocessed(out, fmt).volume("v").name.removeprefix("v")
        assert names() == [f"v{suffix}", f"v.lesion{suffix}"], (fmt, names())
        assert reader.volume("v").name == f"v{suffix}" and reader.mask("v", "lesion").name == f"v.lesion{suffix}"
        assert pd.read_csv(out / "shards" / "00000.qc.csv")["output"][0].endswith(suffix)
    assert runs == [0, 1, 0, 1, 0]                      # resumed only when the format stayed the same
    # a QC sidecar of the other format is not taken for this one, even beside a file of the right name
    cache = Preprocessed(out, "b2nd").volume("v")
    cache.write_bytes(b"stale")
    assert preprocess_shard(manifest, 0, out, PreprocessConfig(spacing=[3.0, 3.0, 6.0], format="b2nd"),
                            progress=False)["resumed"] == 0
    assert read_preprocessed(cache).shape == read_preprocessed(Preprocessed(out).volume("v")).shape


# ---------------------------------------------------------------- field of view, rescaling, QC statistics

def test_padding_and_everything_outside_the_source_is_air(tmp_path):
    """Soft tissue up to every edge of the input (lungs inside): the output holds the tissue up to the last
    voxel that fits in the source and air (-1000) beyond, in the crop/pad padding too, never an edge copy.
    z: 12 slices of 2.6 mm span 28.6 mm, so 10 slices of 3 mm fit (MONAI's grid would take 11)."""
    volume = np.full((30, 26, 12), 40, np.int16)
    volume[8:22, 6:20, 3:9] = -850
    affine = np.diag([-1.2, -1.2, 2.6, 1.0])
    path = tmp_path / "edge.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), path)
    cfg = PreprocessConfig(spacing=[2.0, 2.0, 3.0], size=[24, 22, 16])
    out = Output(preprocess_volume(row("edge", path), tmp_path / "out", cfg)["output"]).data
    tissue = out > -500
    extent = [np.flatnonzero(tissue.any(axis=tuple(a for a in range(3) if a != k))) for k in range(3)]
    assert [len(e) for e in extent] == [18, 16, 10]          # floor(29·1.2/2)+1, 25·1.2/2+1, floor(28.6/3)+1
    box = tuple(slice(e[0], e[-1] + 1) for e in extent)
    inner = out[box]
    for face in (inner[0], inner[-1], inner[:, 0], inner[:, -1], inner[:, :, 0], inner[:, :, -1]):
        assert np.all(np.abs(face - 40) <= 2)                  # the edges of the source: tissue, not air
    outside = np.ones(out.shape, bool)
    outside[box] = False
    assert np.all(out[outside] == -1000)                       # padding and anything past the source: air


def test_to_hu_keeps_int16_and_memory_order():
    from simcrop.data.preprocess import to_hu

    stored = np.asfortranarray(np.random.default_rng(0).integers(0, 3000, size=(9, 8, 7)).astype(np.uint16))
    v1 = {"apply_rescale": 1, "rescale_slope": 1.0, "rescale_intercept": -1024.0}
    hu, rescaled = to_hu(stored, v1)
    assert rescaled and hu.dtype == np.int16 and hu.flags.f_contiguous
    np.testing.assert_array_equal(hu, stored.astype(np.int32) - 1024)
    hu, _ = to_hu(stored, {**v1, "rescale_slope": 2.0, "rescale_intercept": -2048.0})
    assert hu.dtype == np.int16 and np.array_equal(hu, stored.astype(np.int32) * 2 - 2048)
    hu, _ = to_hu(stored, {**v1, "rescale_slope": 12.0})                 # past int16: float32
    assert hu.dtype == np.float32 and np.array_equal(hu, stored.astype(np.float32) * 12 - 1024)
    hu, _ = to_hu(stored, {**v1, "rescale_slope": 0.5})
    np.testing.assert_allclose(hu, stored * 0.5 - 1024, atol=1e-3)
    assert to_hu(stored, {"apply_rescale": 0})[0] is stored


def test_qc_fill_holes_and_percentiles_are_exact():
    """The one-labelling hole filling equals scipy's slice by slice; histogram percentiles equal
    np.percentile (linear), so the QC fingerprint values are exact, not approximations."""
    from scipy import ndimage

    from simcrop.data.qc import fill_holes_axial, percentiles

    rng = np.random.default_rng(3)
    mask = ndimage.binary_opening(rng.random((40, 36, 9)) > 0.45)
    reference = np.stack([ndimage.binary_fill_holes(mask[:, :, z]) for z in range(mask.shape[2])], axis=2)
    np.testing.assert_array_equal(fill_holes_axial(mask), reference)
    for values in (rng.integers(-1024, 3000, size=n).astype(np.int16) for n in (1, 2, 7, 10_001)):
        np.testing.assert_allclose(percentiles(values, [1, 50, 99]),
                                   np.percentile(values.astype(np.float64), [1, 50, 99]), rtol=0, atol=1e-9)
