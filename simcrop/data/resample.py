"""Geometry of preprocessing: reorient to RAS, resample to a target spacing, centre crop/pad.

The output grid is the one MONAI's chain `Orientation("RAS") → Spacing(pixdim) →
ResizeWithPadOrCrop(size)` produces (checked value-for-value in benchmarks/preprocess.py):
- Orientation is a flip/transpose of the array and the affine (no interpolation).
- Spacing on a RAS-diagonal affine keeps voxel 0 where it is and takes
  `n_out = round((n_in - 1) · s_in / s_out + 1)` voxels per axis (monai.data.utils.compute_shape_offset);
  output voxel i samples input position i · s_out / s_in, clamped to [0, n_in - 1] (border padding).
- ResizeWithPadOrCrop: crop starts at n // 2 - size // 2; padding puts (size - n) // 2 before.

Because such a grid is axis-aligned, trilinear interpolation factorises into three 1-D linear passes
(float32, on only the voxels that survive the crop, in the array's memory order, never materialising
the reoriented input), which is where the speed comes from. Oblique
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


def ras_grid(shape, affine) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine `reorient_to_ras` would give, without touching an array."""
    ornt = nib.orientations.io_orientation(affine)
    transform = nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt("RAS"))
    ras_shape = [0, 0, 0]
    for axis, (k, _) in enumerate(transform):
        ras_shape[int(k)] = int(shape[axis])
    return tuple(ras_shape), affine @ nib.orientations.inv_ornt_aff(transform, shape)


def is_axis_aligned(affine: np.ndarray) -> bool:
    """True for a RAS affine that is diagonal (positive) up to rounding noise."""
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


def _resampled_extent(ras_shape, ras_affine, spacing):
    """MONAI Spacing's grid for a RAS-diagonal input: (voxels per axis, world position of voxel 0)."""
    in_sp = np.diag(ras_affine[:3, :3])
    n_res = np.round((np.asarray(ras_shape) - 1) * in_sp / np.asarray(spacing) + 1.0).astype(int)
    return n_res, ras_affine[:3, 3].copy()


def output_grid(shape, affine, spacing, size=None) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and RAS-diagonal affine of the preprocessed volume for an input grid (any orientation)."""
    spacing = np.asarray(spacing, dtype=np.float64)
    ras_shape, ras_affine = ras_grid(shape, affine)
    if is_axis_aligned(ras_affine):
        n_res, origin = _resampled_extent(ras_shape, ras_affine, spacing)
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


def _linear_pass(array: np.ndarray, axis: int, pos: np.ndarray) -> np.ndarray:
    """1-D linear interpolation of C-contiguous `array` along `axis` at `pos` (clamped); float32 out."""
    n = array.shape[axis]
    pos = np.clip(pos, 0.0, n - 1.0)
    if n == 1:
        return np.take(array, np.zeros(len(pos), dtype=np.intp), axis=axis).astype(np.float32)
    lo = np.minimum(np.floor(pos).astype(np.intp), n - 2)
    w = (pos - lo).astype(np.float32)
    if not np.any(w):                              # same spacing, integer shift: pure selection
        return np.take(array, lo, axis=axis).astype(np.float32, copy=False)
    shape = [1] * array.ndim
    shape[axis] = len(pos)
    a = np.take(array, lo, axis=axis)
    out = np.subtract(np.take(array, lo + 1, axis=axis), a, dtype=np.float32)
    out *= w.reshape(shape)
    out += a
    return out


def resample(array: np.ndarray, affine: np.ndarray, out_shape, out_affine, *, nearest: bool = False,
             fill: float = 0.0) -> np.ndarray:
    """Sample `array (X, Y, Z)` with voxel → RAS `affine` (any orientation) on the RAS-diagonal grid
    (`out_shape`, `out_affine`). Linear (float32 out) or nearest (input dtype out).

    Output voxels outside MONAI Spacing's resampled extent (the padding of a crop/pad) get `fill`; inside,
    positions past the last input voxel clamp to it, as MONAI's border padding does. Axis-aligned inputs
    are never reoriented: each 1-D pass runs on the array in its memory order (flipped axes are handled
    by flipping sample positions), which keeps every gather contiguous.
    """
    ras_shape, ras_affine = ras_grid(array.shape, affine)
    if not is_axis_aligned(ras_affine):
        return _resample_general(array, affine, out_shape, out_affine, nearest=nearest, fill=fill)
    out_sp = np.diag(out_affine[:3, :3])
    n_res, origin = _resampled_extent(ras_shape, ras_affine, out_sp)
    starts = np.round((out_affine[:3, 3] - origin) / out_sp).astype(int)
    lo = np.clip(-starts, 0, out_shape).astype(int)
    hi = np.clip(n_res - starts, 0, out_shape).astype(int)
    out = np.full(out_shape, fill, dtype=array.dtype if nearest else np.float32)
    if np.any(hi <= lo):
        return out
    # sample positions along each input axis, from the world coordinates of the output voxels
    ras_axis = nib.orientations.io_orientation(affine)[:, 0].astype(int)     # input axis → RAS axis
    view, positions = array, []
    for axis, k in enumerate(ras_axis):
        world = out_affine[k, 3] + np.arange(lo[k], hi[k]) * out_sp[k]
        pos = (world - affine[k, 3]) / affine[k, axis]
        if view.strides[axis] < 0:                 # undo a negative-stride view: contiguous gathers
            view = np.flip(view, axis)
            pos = (array.shape[axis] - 1) - pos
        positions.append(pos)
    order = np.argsort([-abs(st) for st in view.strides], kind="stable")   # slowest axis first
    inner = np.ascontiguousarray(view.transpose(order))
    for i, axis in enumerate(order):
        pos = positions[axis]
        if nearest:
            index = np.clip(np.rint(pos), 0, array.shape[axis] - 1).astype(np.intp)
            inner = np.take(inner, index, axis=i)
        else:
            inner = _linear_pass(inner, i, pos)
    to_ras = [int(np.flatnonzero(ras_axis[order] == k)[0]) for k in range(3)]
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = inner.transpose(to_ras)
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
