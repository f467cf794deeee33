"""The fast resampler reproduces MONAI's Orientation → Spacing → ResizeWithPadOrCrop grid and values."""
from __future__ import annotations

import numpy as np
import pytest

from simcrop.data.resample import output_grid, reorient_to_ras, resample

AFFINES = {
    "lps": np.diag([-0.7, -0.9, 1.5, 1.0]),
    "ras": np.diag([0.8, 0.6, 2.5, 1.0]),
    "permuted": np.array([[0, 0, -1.1, 5], [1.4, 0, 0, -3], [0, 0.9, 0, 7], [0, 0, 0, 1]], float),
}


def monai_reference(array, affine, spacing, size, fill):
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Orientation, ResizeWithPadOrCrop, Spacing

    image = MetaTensor(torch.as_tensor(array[None].astype(np.float32)), affine=torch.as_tensor(affine))
    image = Spacing(pixdim=spacing, mode="bilinear")(Orientation(axcodes="RAS", labels=None)(image))
    if size is not None:
        image = ResizeWithPadOrCrop(size, mode="constant", constant_values=fill)(image)
    return image[0].numpy(), image.affine.numpy()


@pytest.mark.parametrize("name", sorted(AFFINES))
@pytest.mark.parametrize("spacing,size", [((1.5, 1.5, 3.0), None), ((0.5, 1.3, 2.2), (23, 40, 9)),
                                          ((1.0, 0.6, 2.5), None)])
def test_matches_monai(name, spacing, size):
    affine = AFFINES[name].copy()
    affine[:3, 3] += [12.0, -30.0, 4.0]
    array = np.random.default_rng(0).integers(-1000, 1000, size=(31, 26, 11)).astype(np.int16)
    ref, ref_affine = monai_reference(array, affine, spacing, size, fill=-1000.0)
    shape, out_affine = output_grid(array.shape, affine, spacing, size)
    ours = resample(array, affine, shape, out_affine, fill=-1000.0)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(out_affine, ref_affine, atol=1e-5)
    np.testing.assert_allclose(ours, ref, atol=2e-3)


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


def test_oblique_input_goes_to_a_ras_diagonal_grid():
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.0, 1.0, 2.0])
    array = np.zeros((30, 30, 10), np.float32)
    array[14:17, 14:17, 4:6] = 1000
    shape, out_affine = output_grid(array.shape, affine, (1.0, 1.0, 2.0))
    out = resample(array, affine, shape, out_affine)
    assert np.allclose(out_affine[:3, :3], np.diag([1.0, 1.0, 2.0]))
    centroid = np.argwhere(out > 500).mean(0)
    expected = affine[:3, :3] @ np.array([15.0, 15.0, 4.5]) + affine[:3, 3]
    assert np.linalg.norm(out_affine[:3, :3] @ centroid + out_affine[:3, 3] - expected) < 1.5
