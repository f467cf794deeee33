"""Geometry of preprocessing: reorient to RAS, resample to a target spacing, centre crop/pad.

The output grid is the one MONAI's chain `Orientation("RAS") → Spacing(pixdim) →
ResizeWithPadOrCrop(size)` produces (checked value-for-value in benchmarks/preprocess.py):
- Orientation is a flip/transpose of the array and the affine (no interpolation).
- Spacing on a RAS-diagonal affine keeps voxel 0 where it is and takes
  `n_out = round((n_in - 1) · s_in / s_out + 1)` voxels per axis (monai.data.utils.compute_shape_offset);
  output voxel i samples input position i · s_out / s_in, clamped to [0, n_in - 1] (border padding).
- ResizeWithPadOrCrop: crop starts at n // 2 - size // 2; padding puts (size - n) // 2 before.

Because such a grid is axis-aligned, trilinear interpolation factorises into three 1-D linear passes
(float32, on only the voxels that survive the crop), which is where the speed comes from. Oblique
affines (rotated or sheared after reorientation) take a general trilinear path onto a RAS-diagonal grid.
"""
from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np

AXIS_ALIGNED_TOL = 1e-4      # largest off-diagonal / spacing still treated as axis-aligned


def reorient_to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip/transpose `array (X, Y, Z)` so its axes point to R, A, S; returns (view, new affine)."""
    ornt = nib.orientations.io_orientation(affine)
    target = nib.orientations.axcodes2ornt("RAS")
    transform = nib.orientations.ornt_transform(ornt, target)
    if np.array_equal(transform, target):         # already RAS
        return array, np.asarray(affine, dtype=np.float64)
    out = nib.orientations.apply_orientation(array, transform)
    new_affine = affine @ nib.orientations.inv_ornt_aff(transform, array.shape)
    return out, new_affine


def is_axis_aligned(affine: np.ndarray) -> bool:
    rzs = affine[:3, :3]
    spacing = np.sqrt((rzs ** 2).sum(axis=0))
    off = rzs - np.diag(np.diag(rzs))
    return bool(np.all(np.diag(rzs) > 0) and np.abs(off).max() <= AXIS_ALIGNED_TOL * spacing.min())


def crop_pad_start(n: int, size: int | None) -> int:
    """Index in the resampled axis of output voxel 0 (negative: that many voxels of padding before)."""
    if size is None or size == n:
        return 0
    if size < n:
        return n // 2 - size // 2
    return -((size - n) // 2)


def output_grid(shape, affine, spacing, size=None) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and RAS-diagonal affine of the preprocessed volume for a RAS input grid."""
    spacing = np.asarray(spacing, dtype=np.float64)
    if is_axis_aligned(affine):
        in_sp = np.diag(affine[:3, :3])
        n_res = np.round((np.asarray(shape) - 1) * in_sp / spacing + 1.0).astype(int)
        origin = affine[:3, 3].copy()
    else:                                          # bounding box of the input voxel centres
        corners = np.array(list(itertools.product(*[(0, n - 1) for n in shape])), dtype=np.float64)
        world = corners @ affine[:3, :3].T + affine[:3, 3]
        n_res = np.round(np.ptp(world, axis=0) / spacing + 1.0).astype(int)
        origin = world.min(axis=0)
    size = [None] * 3 if size is None else list(size)
    out_shape = tuple(int(n if s is None else s) for n, s in zip(n_res, size))
    starts = np.array([crop_pad_start(int(n), s) for n, s in zip(n_res, size)], dtype=np.float64)
    out_affine = np.diag(np.append(spacing, 1.0))
    out_affine[:3, 3] = origin + starts * spacing
    return out_shape, out_affine


def _axis_positions(affine_in, affine_out, axis: int, n_out: int) -> np.ndarray:
    """Input voxel position (float) sampled by each output voxel along one axis (axis-aligned case)."""
    s_in, s_out = affine_in[axis, axis], affine_out[axis, axis]
    first = (affine_out[axis, 3] - affine_in[axis, 3]) / s_in
    return first + np.arange(n_out) * (s_out / s_in)


def _pass_order(shape_in, shape_out) -> tuple[int, ...]:
    """Axis order for the separable passes that touches the fewest voxels (shrink first)."""
    def cost(order):
        shape, total = list(shape_in), 0
        for axis in order:
            shape[axis] = shape_out[axis]
            total += int(np.prod(shape))
        return total
    return min(itertools.permutations(range(3)), key=cost)


def _linear_pass(array: np.ndarray, axis: int, pos: np.ndarray) -> np.ndarray:
    """1-D linear interpolation of `array` along `axis` at `pos` (clamped), float32 out."""
    n = array.shape[axis]
    pos = np.clip(pos, 0.0, n - 1.0)
    if n == 1:
        return np.take(array, np.zeros(len(pos), dtype=np.intp), axis=axis).astype(np.float32)
    lo = np.minimum(np.floor(pos).astype(np.intp), n - 2)
    w = (pos - lo).astype(np.float32)
    if np.all(w == 0):                               # pure index selection (same spacing, integer shift)
        return np.take(array, lo, axis=axis).astype(np.float32, copy=False)
    shape = [1, 1, 1]
    shape[axis] = len(pos)
    a = np.take(array, lo, axis=axis).astype(np.float32, copy=False)
    b = np.take(array, lo + 1, axis=axis).astype(np.float32, copy=False)
    b -= a
    b *= w.reshape(shape)
    a += b
    return a


def resample(array: np.ndarray, affine: np.ndarray, out_shape, out_affine, *, nearest: bool = False,
             fill: float = 0.0) -> np.ndarray:
    """Sample `array (X, Y, Z)` (grid `affine`, RAS) on the grid (`out_shape`, `out_affine`).

    Linear (float32 out) or nearest (input dtype out). Output voxels outside the input's resampled extent
    (padding) get `fill`; positions just past the edge clamp to it, as MONAI's border padding does.
    """
    if not is_axis_aligned(affine):
        return _resample_general(array, affine, out_shape, out_affine, nearest=nearest, fill=fill)
    # voxels of the output that lie in the (uncropped) resampled grid: the rest is padding
    in_sp = np.diag(affine[:3, :3])
    n_res = np.round((np.asarray(array.shape) - 1) * in_sp / np.diag(out_affine[:3, :3]) + 1.0)
    starts = np.round((out_affine[:3, 3] - affine[:3, 3]) / np.diag(out_affine[:3, :3])).astype(int)
    lo = np.clip(-starts, 0, out_shape)
    hi = np.clip(n_res - starts, 0, out_shape).astype(int)
    inner_shape = tuple(int(h - l) for l, h in zip(lo, hi))
    dtype = array.dtype if nearest else np.float32
    out = np.full(out_shape, fill, dtype=dtype)
    if min(inner_shape) <= 0:
        return out
    inner = array
    for axis in _pass_order(array.shape, inner_shape):
        pos = _axis_positions(affine, out_affine, axis, out_shape[axis])[lo[axis]:hi[axis]]
        if nearest:
            index = np.clip(np.rint(pos), 0, array.shape[axis] - 1).astype(np.intp)
            inner = np.take(inner, index, axis=axis)
        else:
            inner = _linear_pass(inner, axis, pos)
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = inner
    return out


def _resample_general(array, affine, out_shape, out_affine, *, nearest, fill):
    """Oblique input: trilinear/nearest sampling at each output voxel's world position (slow path)."""
    from scipy import ndimage

    to_input = np.linalg.solve(affine, out_affine)
    out = ndimage.affine_transform(
        array.astype(array.dtype if nearest else np.float32, copy=False), to_input[:3, :3],
        offset=to_input[:3, 3], output_shape=tuple(out_shape), order=0 if nearest else 1,
        mode="constant", cval=fill)
    return out
