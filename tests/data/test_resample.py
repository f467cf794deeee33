"""The resampler: MONAI's Orientation → Spacing → ResizeWithPadOrCrop grid without its overshoot past the
source, MONAI's bilinear values there when anti-aliasing is off, Gaussian anti-aliasing along downsampled
axes only, and `fill` (air) for every output voxel outside the source."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from simcrop.data.qc import LUNG_HU, body_mask
from simcrop.data.resample import (_axis_weights, _banded_pass, antialias_sigma, output_grid,
                                   reorient_to_ras, resample)

AFFINES = {
    "lps": np.diag([-0.7, -0.9, 1.5, 1.0]),
    "ras": np.diag([0.8, 0.6, 2.5, 1.0]),
    "permuted": np.array([[0, 0, -1.1, 5], [1.4, 0, 0, -3], [0, 0.9, 0, 7], [0, 0, 0, 1]], float),
}
FILL = -1000.0


def monai_spacing(array, affine, spacing):
    """MONAI Orientation("RAS") → Spacing(bilinear): (values, affine), no crop/pad."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    image = MetaTensor(torch.as_tensor(array[None].astype(np.float32)), affine=torch.as_tensor(affine))
    image = Spacing(pixdim=spacing, mode="bilinear")(Orientation(axcodes="RAS", labels=None)(image))
    return image[0].numpy(), image.affine.numpy()


def ras_extent_mm(shape, affine):
    """(first, last) input voxel centre along each RAS axis, world mm, for an axis-aligned affine."""
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in shape])), dtype=float)
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    return world.min(0), world.max(0)


@pytest.mark.parametrize("name", sorted(AFFINES))
@pytest.mark.parametrize("spacing,size", [((1.5, 1.5, 3.0), None), ((0.5, 1.3, 2.2), (23, 40, 9)),
                                          ((1.0, 0.6, 2.5), None), ((2.1, 2.0, 3.3), (20, 9, 4))])
def test_grid_is_monais_without_the_overshoot_and_values_match_without_antialiasing(name, spacing, size):
    affine = AFFINES[name].copy()
    affine[:3, 3] += [12.0, -30.0, 4.0]
    array = np.random.default_rng(0).integers(-1000, 1000, size=(31, 26, 11)).astype(np.int16)
    ref, ref_affine = monai_spacing(array, affine, spacing)
    full_shape, full_affine = output_grid(array.shape, affine, spacing)
    # same lattice and origin as MONAI; MONAI has one more voxel exactly where its last one overshoots
    np.testing.assert_allclose(full_affine, ref_affine, atol=1e-5)
    first, last = ras_extent_mm(array.shape, affine)
    for k in range(3):
        last_centre = ref_affine[k, 3] + (ref.shape[k] - 1) * spacing[k]
        assert ref.shape[k] - full_shape[k] == int(last_centre > last[k] + 1e-6), k
        assert full_affine[k, 3] + (full_shape[k] - 1) * spacing[k] <= last[k] + 1e-6 < \
            full_affine[k, 3] + full_shape[k] * spacing[k]

    shape, out_affine = output_grid(array.shape, affine, spacing, size)
    ours = resample(array, affine, shape, out_affine, fill=FILL, anti_alias=False)
    assert ours.shape == (shape if size is None else tuple(size))
    offset = np.rint((out_affine[:3, 3] - ref_affine[:3, 3]) / spacing).astype(int)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1) + offset
    inside = np.all((index >= 0) & (index < np.array(full_shape)), axis=-1)
    np.testing.assert_allclose(ours[inside], ref[tuple(index[inside].T)], atol=2e-3)
    assert np.all(ours[~inside] == FILL)


def test_outside_the_source_is_fill_never_an_edge_copy():
    """A 500 HU block (no air) whose voxel centres span 21 x 17 x 20 mm: at 3 x 3 x 6 mm, 8 x 6 x 4
    voxels fit (MONAI's y grid would take a 7th at 18 mm, past the 17 mm edge, copying the edge slice);
    padded to 12 x 10 x 8, everything else is the fill."""
    affine = np.diag([-1.0, 1.0, 2.5, 1.0])
    affine[:3, 3] = [40.0, -10.0, 5.0]
    array = np.full((22, 18, 9), 500, np.int16)
    shape, out_affine = output_grid(array.shape, affine, (3.0, 3.0, 6.0))
    assert shape == (8, 6, 4)
    shape, out_affine = output_grid(array.shape, affine, (3.0, 3.0, 6.0), size=(12, 10, 8))
    for anti_alias in (True, False):
        out = np.rint(resample(array, affine, shape, out_affine, fill=FILL, anti_alias=anti_alias))
        block = out == 500
        assert set(np.unique(out).tolist()) == {FILL, 500.0}
        box = [np.flatnonzero(block.any(axis=tuple(a for a in range(3) if a != k))) for k in range(3)]
        assert [len(b) for b in box] == [8, 6, 4] and block.sum() == 8 * 6 * 4
        first, last = ras_extent_mm(array.shape, affine)
        for k in range(3):
            world = out_affine[k, 3] + box[k] * out_affine[k, k]
            assert world.min() >= first[k] - 1e-6 and world.max() <= last[k] + 1e-6
    mask = resample(np.ones(array.shape, np.uint8), affine, shape, out_affine, nearest=True, fill=0)
    assert mask.dtype == np.uint8 and mask.sum() == 8 * 6 * 4


def test_antialias_sigma_convention():
    """σ = sqrt(f² - 1) / (2 sqrt(2 ln 2)) input voxels (Cardoso et al. 2015 / TorchIO); none unless f > 1."""
    assert antialias_sigma(1.0) == antialias_sigma(0.5) == 0.0
    assert antialias_sigma(3.0) == pytest.approx(np.sqrt(8) / 2.3548, rel=1e-4)      # 1.201
    assert antialias_sigma(1.5 / 0.7) == pytest.approx(0.804, abs=1e-3)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("sigma", [0.0, 0.8, 1.7])
def test_banded_map_is_gaussian_then_linear(axis, sigma):
    """The fused pass equals scipy's gaussian_filter1d (same truncation) followed by linear interpolation,
    away from the borders (where ours renormalises over the voxels that exist)."""
    a = np.random.default_rng(1).normal(size=(40, 33, 37)).astype(np.float32)
    n = a.shape[axis]
    pos = np.linspace(0, n - 1, 13) + 0.37
    pos = pos[pos <= n - 1]
    first, weights = _axis_weights(n, pos, sigma)
    ours = _banded_pass(a, axis, first, weights)
    smooth = ndimage.gaussian_filter1d(a.astype(np.float64), sigma, axis=axis, truncate=3.0) if sigma else a
    lo = np.floor(pos).astype(int)
    shape = [-1 if i == axis else 1 for i in range(3)]
    ref = (np.take(smooth, lo, axis) * (1 - (pos - lo)).reshape(shape)
           + np.take(smooth, lo + 1, axis) * (pos - lo).reshape(shape))
    interior = np.flatnonzero((pos > 3 * sigma + 2) & (pos < n - 3 - 3 * sigma))
    assert interior.size >= 5
    np.testing.assert_allclose(np.take(ours, interior, axis), np.take(ref, interior, axis), atol=1e-5)


def test_antialiasing_cuts_aliased_energy_tenfold():
    """Content finer than the output grid can hold (cosines between its Nyquist frequency and the input's,
    along every axis) ideally comes out flat: the output variance is aliased energy. 0.7 x 0.7 x 1 mm →
    3 mm (f = 4.3, 4.3, 3). A checkerboard at the input's Nyquist (sharp-kernel speckle) too."""
    in_sp, out_sp = np.array([0.7, 0.7, 1.0]), np.array([3.0, 3.0, 3.0])
    shape = (160, 150, 120)
    rng = np.random.default_rng(0)
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij", sparse=True)
    affine = np.diag([-0.7, -0.7, 1.0, 1.0])
    out_shape, out_affine = output_grid(shape, affine, out_sp)
    volume = np.zeros(shape, np.float32)
    for axis in range(3):
        nyquist_out = in_sp[axis] / (2 * out_sp[axis])                  # cycles per input voxel
        for nu in rng.uniform(nyquist_out, 0.5, size=4):
            volume += 100 * np.cos(2 * np.pi * nu * grids[axis] + rng.uniform(0, 2 * np.pi))
    checker = (100 * (-1.0) ** (grids[0] + grids[1] + grids[2])).astype(np.float32)
    for pattern in (volume, checker):
        plain = resample(pattern, affine, out_shape, out_affine, anti_alias=False)
        smooth = resample(pattern, affine, out_shape, out_affine)
        assert plain.var() > 0.01 * pattern.var()                       # plain linear does alias
        assert plain.var() >= 10 * smooth.var(), (plain.var(), smooth.var())


def test_no_smoothing_along_kept_or_upsampled_axes_nor_for_masks():
    """x kept (1 mm → 1 mm), y downsampled (0.5 → 2 mm), z upsampled (3 → 1.5 mm): a pattern constant
    along y comes out as plain linear interpolation gives it; one varying along y does not."""
    affine = np.diag([1.0, 0.5, 3.0, 1.0])
    shape, out_affine = output_grid((30, 40, 12), affine, (1.0, 2.0, 1.5))
    rng = np.random.default_rng(2)
    along_xz = np.broadcast_to(rng.normal(size=(30, 1, 12)), (30, 40, 12)).astype(np.float32)
    np.testing.assert_allclose(resample(along_xz, affine, shape, out_affine),
                               resample(along_xz, affine, shape, out_affine, anti_alias=False), atol=1e-5)
    along_y = np.broadcast_to(rng.normal(size=(1, 40, 1)), (30, 40, 12)).astype(np.float32)
    assert not np.allclose(resample(along_y, affine, shape, out_affine),
                           resample(along_y, affine, shape, out_affine, anti_alias=False), atol=1e-2)
    labels = rng.integers(0, 5, size=(30, 40, 12)).astype(np.uint8)
    np.testing.assert_array_equal(resample(labels, affine, shape, out_affine, nearest=True),
                                  resample(labels, affine, shape, out_affine, nearest=True, anti_alias=False))


def test_nearest_keeps_labels_and_reorient_is_a_view():
    affine = AFFINES["lps"]
    labels = np.random.default_rng(1).integers(0, 4, size=(20, 15, 9)).astype(np.uint8) * 7
    shape, out_affine = output_grid(labels.shape, affine, (1.1, 1.1, 1.1))
    out = resample(labels, affine, shape, out_affine, nearest=True)
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 7, 14, 21}
    ras, ras_affine = reorient_to_ras(labels, affine)
    assert np.shares_memory(ras, labels) and np.all(np.diag(ras_affine)[:3] > 0)
    # same spacing as the RAS input → nearest resampling is exactly the reorientation
    shape, out_affine = output_grid(labels.shape, affine, np.abs(np.diag(affine)[:3]))
    np.testing.assert_array_equal(resample(labels, affine, shape, out_affine, nearest=True), ras)


def test_oblique_input_goes_to_a_ras_diagonal_grid_with_air_outside():
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.0, 1.0, 2.0])
    array = np.full((30, 30, 10), 40, np.float32)
    array[14:17, 14:17, 4:6] = 1000
    shape, out_affine = output_grid(array.shape, affine, (1.0, 1.0, 2.0))
    out = resample(array, affine, shape, out_affine, fill=FILL)
    assert np.allclose(out_affine[:3, :3], np.diag([1.0, 1.0, 2.0]))
    centroid = np.argwhere(out > 500).mean(0)
    expected = affine[:3, :3] @ np.array([15.0, 15.0, 4.5]) + affine[:3, 3]
    assert np.linalg.norm(out_affine[:3, :3] @ centroid + out_affine[:3, 3] - expected) < 1.5
    # the bounding box's corners lie outside the rotated volume: exactly the fill, no smeared edge
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    source = (index @ out_affine[:3, :3].T + out_affine[:3, 3] - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    outside = np.any((source < -1e-3) | (source > np.array(array.shape) - 1 + 1e-3), axis=1)
    assert outside.sum() > 100 and np.all(out.reshape(-1)[outside] == FILL)
    assert np.all(out.reshape(-1)[~outside] >= 39.0)
    # downsampled 3x in-plane: the 3-voxel bright cube is smoothed, not sampled (peak well below 1000)
    shape, out_affine = output_grid(array.shape, affine, (3.0, 3.0, 2.0))
    assert resample(array, affine, shape, out_affine).max() < \
        resample(array, affine, shape, out_affine, anti_alias=False).max()


def _lung_air_centroid(hu, affine):
    """World mm (RAS) centroid of lung air: voxels in LUNG_HU inside the body (simcrop.data.qc)."""
    lung = body_mask(hu) & (hu >= LUNG_HU[0]) & (hu <= LUNG_HU[1])
    return affine[:3, :3] @ np.argwhere(lung).mean(0) + affine[:3, 3]


def test_real_ct_lung_air_stays_put(shared_data):
    """Real DICOM chest CT (0.65 x 0.65 x 8 mm, B40f) to the default 3 x 3 x 6 mm: anti-aliasing moves
    the lung-air centroid < 3 mm from plain linear on the same grid and from the input's own centroid
    (measured 0.9 and 1.2 mm)."""
    from simcrop.data.volume_io import load_volume

    volume = load_volume(shared_data / "dicom" / "lungpetctdx_A0002_B40f", "dicom")
    shape, out_affine = output_grid(volume.array.shape, volume.affine, (3.0, 3.0, 6.0))
    smooth, plain = (np.rint(resample(volume.array, volume.affine, shape, out_affine, fill=FILL,
                                      anti_alias=aa)) for aa in (True, False))
    centroid = _lung_air_centroid(smooth, out_affine)
    assert np.linalg.norm(centroid - _lung_air_centroid(plain, out_affine)) < 3.0
    assert np.linalg.norm(centroid - _lung_air_centroid(volume.array, volume.affine)) < 3.0
    # and the speckle goes: voxel-to-voxel HU differences inside the lungs shrink
    lung = body_mask(smooth) & (smooth >= LUNG_HU[0]) & (smooth <= LUNG_HU[1])
    lung[-1] = False
    assert np.abs(np.diff(smooth, axis=0))[lung[:-1]].mean() < np.abs(np.diff(plain, axis=0))[lung[:-1]].mean()
