"""Preprocessed volumes: the one reader and HU scale, the training cache (.b2nd) round trip, partial decoding,
errors that name the file, export to NIfTI."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from cache_files import corrupt_chunks

def test_load_preprocessed_scales_the_configured_window(tmp_path):
    """The one preprocessed-volume reader: the default window is HU / 1000 bit for bit (the historic scale);
    another window maps its ends to -1 and 1; non-RAS or non-3D files are refused."""
    import torch

    from simcrop.data.preprocessed_io import load_preprocessed, read_preprocessed

    hu = np.arange(-1200, 1200, 25, dtype=np.int16).reshape(8, 6, 2)
    nib.save(nib.Nifti1Image(hu, np.eye(4)), str(tmp_path / "v.nii.gz"))
    x = load_preprocessed(tmp_path / "v.nii.gz")
    assert x.shape == (1, 8, 6, 2) and x.dtype == torch.float32
    assert torch.equal(x[0], torch.from_numpy(hu).float().clamp(-1000, 1000).mul(1.0 / 1000))
    y = load_preprocessed(tmp_path / "v.nii.gz", (-1000, 400))
    assert float(y.min()) == -1.0 and float(y.max()) == 1.0
    assert torch.allclose(y[0], (torch.from_numpy(hu).float().clamp(-1000, 400) + 300) / 700)
    assert read_preprocessed(tmp_path / "v.nii.gz").dtype == np.int16
    nib.save(nib.Nifti1Image(hu, np.diag([-1.0, 1.0, 1.0, 1.0])), str(tmp_path / "lps.nii.gz"))
    with pytest.raises(ValueError, match="RAS"):
        load_preprocessed(tmp_path / "lps.nii.gz")


# ---------------------------------------------------------------- the training cache (.b2nd)

def _ct_like(shape, seed=0) -> np.ndarray:
    """Smooth int16 HU with noise (compressible, like CT): a reading of garbage is sure to fail."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    hu = np.where((grid ** 2).sum(0) < 0.6, 40.0, -900.0) + rng.normal(0, 20, shape)
    return np.clip(np.rint(hu), -1000, 1000).astype(np.int16)


def test_cache_round_trip_keeps_voxels_dtype_and_geometry(tmp_path):
    from simcrop.data.preprocessed_io import open_preprocessed, read_preprocessed, write_preprocessed

    affine = np.array([[1.5, 0, 0, -120.0], [0, 1.5, 0, -80.0], [0, 0, 3.0, -300.0], [0, 0, 0, 1]])
    image, labels = _ct_like((40, 36, 20)), np.zeros((40, 36, 20), np.uint8)
    labels[5:9, 6:10, 2:4] = 7
    for name, array in (("v.b2nd", image), ("v.lesion.b2nd", labels), ("v.nii.gz", image)):
        write_preprocessed(tmp_path / name, array, affine, compress_level=1, source="in.nii.gz")
        opened = open_preprocessed(tmp_path / name)
        assert opened.shape == array.shape and opened.dtype == array.dtype
        np.testing.assert_allclose(opened.affine, affine)
        np.testing.assert_allclose(opened.spacing, [1.5, 1.5, 3])
        np.testing.assert_array_equal(read_preprocessed(tmp_path / name), array)
        box = (slice(3, 31), slice(0, 36), slice(5, 6))
        np.testing.assert_array_equal(read_preprocessed(tmp_path / name, box), array[box])
    assert open_preprocessed(tmp_path / "v.b2nd").source == "in.nii.gz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.b2nd", "v.lesion.b2nd", "v.nii.gz"]   # no temp file


def test_a_box_decodes_only_the_chunks_under_it(tmp_path):
    """The cache's reason to be: the voxels outside a box are never decompressed. Every chunk away from
    the box is spoilt; reading the box still works, reading the whole volume fails."""
    from simcrop.data.preprocessed_io import open_preprocessed, read_preprocessed, write_cache

    image = _ct_like((64, 64, 32))
    path = tmp_path / "v.b2nd"
    write_cache(path, image, np.eye(4), chunks=(16, 16, 16), blocks=(8, 8, 8), codec="zstd")   # spoilt: fails
    box = (slice(17, 40), slice(5, 16), slice(16, 30))
    assert corrupt_chunks(path, (17, 5, 16), (40, 16, 30)) == 4 * 4 * 2 - 2 * 1 * 1 - 1     # all but chunk 0
    np.testing.assert_array_equal(read_preprocessed(path, box), image[box])
    assert open_preprocessed(path).shape == (64, 64, 32)               # the header needs no voxel
    with pytest.raises(ValueError, match="unreadable training cache"):
        read_preprocessed(path)


def test_cache_errors_name_the_file(tmp_path):
    from simcrop.data.preprocessed_io import open_preprocessed, read_preprocessed, write_cache

    with pytest.raises(FileNotFoundError, match="missing.b2nd"):
        read_preprocessed(tmp_path / "missing.b2nd")
    (tmp_path / "junk.b2nd").write_bytes(b"not a blosc2 file" * 10)
    with pytest.raises(ValueError, match="junk.b2nd: unreadable training cache"):
        open_preprocessed(tmp_path / "junk.b2nd")
    with pytest.raises(ValueError, match="not a preprocessed volume"):
        read_preprocessed(tmp_path / "v.npz")
    write_cache(tmp_path / "lps.b2nd", _ct_like((8, 8, 4)), np.diag([-1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="expected RAS orientation .*got LPS"):
        read_preprocessed(tmp_path / "lps.b2nd")
    with pytest.raises(ValueError, match="3-D"):
        write_cache(tmp_path / "four.b2nd", np.zeros((2, 2, 2, 2), np.int16), np.eye(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.b2nd", "lps.b2nd"]


def test_export_writes_the_cache_as_nifti_with_its_affine(tmp_path):
    from simcrop.data.preprocessed_io import export_nifti, write_cache

    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    affine[:3, 3] = [-100.0, -90.0, -200.0]
    image = _ct_like((20, 18, 10))
    write_cache(tmp_path / "v.b2nd", image, affine)
    out = export_nifti(tmp_path / "v.b2nd", tmp_path / "out" / "v.nii.gz")
    nifti = nib.load(out)
    np.testing.assert_array_equal(np.asanyarray(nifti.dataobj), image)
    np.testing.assert_allclose(nifti.affine, affine)
    assert nifti.get_data_dtype() == np.int16 and nib.aff2axcodes(nifti.affine) == ("R", "A", "S")


def test_cache_codec_is_configurable_and_every_codec_reads_back_the_same(tmp_path):
    """preprocess.cache_codec: each codec writes a file blosc2 marks with it; the reader needs no setting;
    the config default is the first of CACHE_CODECS; an unknown codec is refused naming the file."""
    import blosc2

    from simcrop.config import PreprocessConfig
    from simcrop.data.preprocessed_io import CACHE_CODECS, read_preprocessed, write_preprocessed

    assert PreprocessConfig().cache_codec == CACHE_CODECS[0] == "lz4hc"
    image, box = _ct_like((40, 36, 20)), (slice(3, 31), slice(2, 30), slice(4, 19))
    for codec in CACHE_CODECS:
        path = tmp_path / f"{codec}.b2nd"
        write_preprocessed(path, image, np.eye(4), compress_level=1, codec=codec)
        assert blosc2.open(str(path), mode="r").cparams.codec == blosc2.Codec[codec.upper()]
        np.testing.assert_array_equal(read_preprocessed(path, box), image[box])
    with pytest.raises(ValueError, match="bad.b2nd: cache codec must be one of"):
        write_preprocessed(tmp_path / "bad.b2nd", image, np.eye(4), codec="gzip")
    assert not (tmp_path / "bad.b2nd").exists()


def test_cache_records_its_value_range_and_the_scale_skips_the_clip_only_inside_it(tmp_path):
    """A cache file records its stored [min, max]; `within` says whether a window holds it (never for NIfTI,
    which records none); load_preprocessed then gives the clipped scale bit for bit either way."""
    import torch

    from simcrop.data.preprocessed_io import load_preprocessed, open_preprocessed, scale_hu, write_preprocessed

    hu = np.arange(-1200, 1200, 25, dtype=np.int16).reshape(8, 6, 2)
    inside = np.clip(hu, -1000, 1000)
    for name, array in (("wide.b2nd", hu), ("inside.b2nd", inside), ("inside.nii.gz", inside)):
        write_preprocessed(tmp_path / name, array, np.eye(4))
    assert open_preprocessed(tmp_path / "wide.b2nd").value_range == (-1200, 1175)
    assert open_preprocessed(tmp_path / "inside.b2nd").value_range == (-1000, 1000)
    assert open_preprocessed(tmp_path / "inside.nii.gz").value_range is None
    assert not open_preprocessed(tmp_path / "wide.b2nd").within((-1000, 1000))
    assert open_preprocessed(tmp_path / "wide.b2nd").within((-1500, 1500))
    assert open_preprocessed(tmp_path / "inside.b2nd").within((-1000, 1000))
    assert not open_preprocessed(tmp_path / "inside.b2nd").within((-1000, 400))
    assert not open_preprocessed(tmp_path / "inside.nii.gz").within((-1000, 1000))
    for window in ((-1000, 1000), (-1000, 400), (-1500, 1500)):
        for name, array in (("wide.b2nd", hu), ("inside.b2nd", inside), ("inside.nii.gz", inside)):
            expected = scale_hu(array, window)                                  # always clipped
            assert torch.equal(load_preprocessed(tmp_path / name, window)[0], expected), (name, window)
    assert not torch.equal(scale_hu(hu, (-1000, 1000), clip=False), scale_hu(hu, (-1000, 1000)))
