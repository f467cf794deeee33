"""Geometry of preprocessing: reorient to RAS, anti-aliased resampling to a target spacing, centre crop/pad.

Grid (`output_grid`), RAS-diagonal with the target spacing:
- Orientation is a flip/transpose of the array and the affine (no interpolation).
- Voxel 0 sits on the first input voxel centre (as MONAI's Spacing puts it) and each axis takes as many
  voxels as fit inside the source: `n_out = floor((n_in - 1) · s_in / s_out) + 1`, so the last output
  voxel centre never passes the last input voxel centre. (MONAI's `compute_shape_offset` rounds instead
  and overshoots the source by up to half an output voxel, which its border padding fills with copies of
  the edge slice; our grid is MONAI's, or MONAI's less that one overshooting voxel on such an axis.)
- `size`: ResizeWithPadOrCrop's centre crop/pad (crop starts at n // 2 - size // 2; padding puts
  (size - n) // 2 before).

Values (`resample`):
- An output voxel whose centre lies outside the source (outside the hull of the input voxel centres: the
  padding of a crop/pad, the corners of an oblique volume's box) is `fill`, never a copy of the edge.
- Linear interpolation, preceded by Gaussian anti-aliasing along every axis that is downsampled
  (f = s_out / s_in > 1; none along axes kept or upsampled, none for `nearest`, which masks use):
  σ = sqrt(f² - 1) / (2 · sqrt(2 ln 2)) input voxels, the Gaussian whose FWHM added in quadrature to the
  input voxel's gives the output voxel's (Cardoso et al., "Scale factor point spread function matching:
  beyond aliasing in image resampling", MICCAI 2015; TorchIO's `Resample` anti-aliasing uses the same σ;
  scikit-image's `rescale(anti_aliasing=True)` default (f - 1) / 2 is close: 1.0 against 1.2 at f = 3).
  The kernel is truncated at 3σ and renormalised over the input voxels that exist at the borders.
- Without anti-aliasing (`anti_alias=False`) the values are MONAI Spacing's bilinear ones on the voxels
  both grids share (tests/data/test_resample.py).

Speed: along one axis, smoothing and interpolation together are one banded linear map (≈ 2·3σ + 2
weights per output voxel), applied as dense float32 BLAS products on blocks of the band, axis by axis,
the most downsampled axis first, in the array's memory order: the smoothed or reoriented input is never
materialised, int16 input is converted to float32 once, one cache-sized column tile at a time, and BLAS
runs on one thread (volumes run in parallel, one per core). Oblique affines
(rotated or sheared after reorientation) take a general path (scipy Gaussian + trilinear) onto a
RAS-diagonal grid.
"""
from __future__ import annotations

import contextlib
import itertools
import math

import nibabel as nib
import numpy as np

# the output grid and values: bump when either changes, so resumed preprocessing redoes older outputs
METHOD_VERSION = 2           # 2: anti-aliased downsampling, grid inside the field of view
AXIS_ALIGNED_TOL = 1e-4      # largest off-diagonal / spacing still treated as axis-aligned
FOV_TOL = 1e-3               # input voxels: a sample this close past the last voxel centre is still inside
GRID_EPS = 1e-6              # output voxels: rounding noise forgiven when counting the voxels that fit
TRUNCATE = 3.0               # Gaussian kernel radius in σ
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_BLAS = []                   # threadpoolctl controller, made on first use


def _one_blas_thread():
    """Context limiting BLAS to one thread: volumes are processed in parallel (one per core), and these
    memory-bound products only lose to a second thread spinning against the other jobs."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:                            # not installed: leave BLAS as it is
        return contextlib.nullcontext()
    if not _BLAS:
        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


def antialias_sigma(factor: float) -> float:
    """Gaussian σ in input voxels before downsampling by `factor` = s_out / s_in (0 when not > 1)."""
    return math.sqrt(factor * factor - 1.0) / FWHM_PER_SIGMA if factor > 1.0 else 0.0


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


def _voxels_inside(span_mm, spacing) -> np.ndarray:
    """Voxels of `spacing` whose centres fit in `span_mm` from the first one (at least 1)."""
    return np.floor(np.asarray(span_mm, dtype=np.float64) / np.asarray(spacing) + GRID_EPS).astype(int) + 1


def _resampled_extent(ras_shape, ras_affine, spacing):
    """Grid of an axis-aligned RAS input before crop/pad: (voxels per axis, world position of voxel 0).
    Voxel 0 on input voxel 0 (as MONAI's Spacing), only voxels whose centres lie inside the source."""
    in_sp = np.diag(ras_affine[:3, :3])
    n_res = _voxels_inside((np.asarray(ras_shape) - 1) * in_sp, spacing)
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
        n_res = _voxels_inside(np.ptp(world, axis=0), spacing)
        origin = world.min(axis=0)
    size = [None] * 3 if size is None else list(size)
    out_shape = tuple(int(n if s is None else s) for n, s in zip(n_res, size))
    starts = np.array([crop_pad_start(int(n), s) for n, s in zip(n_res, size)], dtype=np.float64)
    out_affine = np.diag(np.append(spacing, 1.0))
    out_affine[:3, 3] = origin + starts * spacing
    return out_shape, out_affine


def _axis_weights(n: int, pos: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation at `pos` (input voxels, inside [0, n - 1]) of the input smoothed by a Gaussian
    of `sigma` voxels, as one banded map: output j = Σ_t weights[j, t] · input[first[j] + t]. Taps past
    the ends of the axis get weight 0 and each row is renormalised (no padding value leaks in)."""
    radius = int(TRUNCATE * sigma + 0.5) if sigma > 0 else 0
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    gauss = np.exp(-0.5 * (t / sigma) ** 2) if radius else np.ones(1)
    gauss /= gauss.sum()
    pos = np.clip(np.asarray(pos, dtype=np.float64), 0.0, n - 1.0)
    lo = np.clip(np.floor(pos).astype(np.intp), 0, max(n - 2, 0))
    w = (pos - lo)[:, None]
    weights = np.zeros((len(pos), 2 * radius + 2))
    weights[:, :-1] += (1.0 - w) * gauss
    weights[:, 1:] += w * gauss
    first = lo - radius
    index = first[:, None] + np.arange(weights.shape[1])
    weights[(index < 0) | (index >= n)] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    return first, weights.astype(np.float32)


def _band_blocks(first: np.ndarray, weights: np.ndarray, n: int, block: int):
    """The banded map cut into dense pieces: [(j0, j1, k0, k1, matrix)], output voxels j0:j1 reading input
    voxels k0:k1 through `matrix` (float32, (j1 - j0) x (k1 - k0))."""
    n_out, taps = weights.shape
    pieces = []
    for j0 in range(0, n_out, block):
        j1 = min(j0 + block, n_out)
        firsts = first[j0:j1]
        k0, k1 = max(int(firsts.min()), 0), min(int(firsts.max()) + taps, n)
        cols = firsts[:, None] + np.arange(taps) - k0
        ok = (cols >= 0) & (cols < k1 - k0)
        matrix = np.zeros((j1 - j0, k1 - k0), dtype=np.float32)
        matrix[np.nonzero(ok)[0], cols[ok]] = weights[j0:j1][ok]
        pieces.append((j0, j1, k0, k1, matrix))
    return pieces


TILE_BYTES = 4 << 20         # float32 column tile of a first pass on integer input (stays in cache)


def _banded_pass(array: np.ndarray, axis: int, first: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Apply the banded map of `_axis_weights` along `axis` of C-contiguous `array`; float32 out.

    Blocks of output voxels share one window of input voxels; each block is one dense BLAS product of a
    small (block x window) weight matrix with the window. Integer input is converted to float32 once,
    by column tiles that stay in cache (slowest axis) or window by window (other axes)."""
    n = array.shape[axis]
    n_out, taps = weights.shape
    lead, trail = math.prod(array.shape[:axis]), math.prod(array.shape[axis + 1:])
    src = array.reshape(lead, n, trail)
    out = np.empty((lead, n_out, trail), dtype=np.float32)
    step = max(1.0, n / max(n_out, 1))                 # input voxels per output voxel
    if trail == 1:                                     # contiguous axis: (rows x window) @ (window x block)
        for j0, j1, k0, k1, matrix in _band_blocks(first, weights, n, 16):
            window = src[:, k0:k1, 0]
            np.matmul(window if window.dtype == np.float32 else window.astype(np.float32), matrix.T,
                      out=out[:, j0:j1, 0])
    elif lead == 1 and array.dtype != np.float32:      # slowest axis of the raw input
        pieces = _band_blocks(first, weights, n, 4)
        width = max(256, TILE_BYTES // (4 * n))
        buffer = np.empty((n, min(width, trail)), dtype=np.float32)
        for c0 in range(0, trail, width):
            c1 = min(c0 + width, trail)
            tile = buffer[:, :c1 - c0]
            np.copyto(tile, src[0, :, c0:c1], casting="unsafe")
            for j0, j1, k0, k1, matrix in pieces:
                np.matmul(matrix, tile[k0:k1], out=out[0, j0:j1, c0:c1])
    else:                                              # batched over the leading axes
        for j0, j1, k0, k1, matrix in _band_blocks(first, weights, n, max(2, int(round(taps / step)))):
            window = src[:, k0:k1, :]
            np.matmul(matrix, window if window.dtype == np.float32 else window.astype(np.float32),
                      out=out[:, j0:j1, :])
    return out.reshape(array.shape[:axis] + (n_out,) + array.shape[axis + 1:])


def resample(array: np.ndarray, affine: np.ndarray, out_shape, out_affine, *, nearest: bool = False,
             fill: float = 0.0, anti_alias: bool = True) -> np.ndarray:
    """Sample `array (X, Y, Z)` with voxel → RAS `affine` (any orientation) on the RAS-diagonal grid
    (`out_shape`, `out_affine`). Linear with Gaussian anti-aliasing along downsampled axes (float32 out;
    `anti_alias=False`: plain linear), or nearest (input dtype out, never smoothed).

    Output voxels whose centres lie outside the source (past the first or last input voxel centre along
    any axis) get `fill`. Axis-aligned inputs are never reoriented: each 1-D pass runs on the array in its
    memory order (flipped axes are handled by flipping sample positions), which keeps every read
    contiguous, and the result keeps that memory order (RAS axes, not necessarily C-contiguous).
    """
    _, ras_affine = ras_grid(array.shape, affine)
    if not is_axis_aligned(ras_affine):
        return _resample_general(array, affine, out_shape, out_affine, nearest=nearest, fill=fill,
                                 anti_alias=anti_alias)
    out_shape = tuple(int(n) for n in out_shape)
    out_sp = np.diag(out_affine[:3, :3])
    dtype = array.dtype if nearest else np.dtype(np.float32)
    ras_axis = nib.orientations.io_orientation(affine)[:, 0].astype(int)     # input axis → RAS axis
    view, positions, factors, inside = array, [], [], [slice(0, 0)] * 3
    for axis, k in enumerate(ras_axis):
        n = array.shape[axis]
        world = out_affine[k, 3] + np.arange(out_shape[k]) * out_sp[k]
        pos = (world - affine[k, 3]) / affine[k, axis]
        keep = np.flatnonzero((pos >= -FOV_TOL) & (pos <= n - 1 + FOV_TOL))  # monotonic: one run
        if keep.size == 0:
            return np.full(out_shape, fill, dtype=dtype)
        inside[k] = slice(int(keep[0]), int(keep[-1]) + 1)
        pos = np.clip(pos[inside[k]], 0.0, n - 1.0)
        if view.strides[axis] < 0:                 # undo a negative-stride view: contiguous reads
            view = np.flip(view, axis)
            pos = (n - 1) - pos
        positions.append(pos)
        factors.append(out_sp[k] / abs(affine[k, axis]))
    order = np.argsort([-abs(st) for st in view.strides], kind="stable")   # memory order, slowest first
    inner = np.ascontiguousarray(view.transpose(order))
    # most downsampled axis first: every later pass runs on the smallest array so far
    with _one_blas_thread():
        for i in sorted(range(3), key=lambda i: -factors[order[i]]):
            axis = order[i]
            pos = positions[axis]
            if nearest:
                index = np.clip(np.rint(pos), 0, array.shape[axis] - 1).astype(np.intp)
                inner = np.take(inner, index, axis=i)
                continue
            sigma = antialias_sigma(factors[axis]) if anti_alias else 0.0
            first, weights = _axis_weights(array.shape[axis], pos, sigma)
            inner = _banded_pass(inner, i, first, weights)
    to_ras = [int(np.flatnonzero(ras_axis[order] == k)[0]) for k in range(3)]
    if all(s.start == 0 and s.stop == n for s, n in zip(inside, out_shape)):
        return inner.transpose(to_ras)             # no voxel outside the source: a view, no copy
    out = np.full([out_shape[ras_axis[a]] for a in order], fill, dtype=dtype).transpose(to_ras)
    out[tuple(inside)] = inner.transpose(to_ras)   # same memory order on both sides
    return out


def _outside_source(to_input: np.ndarray, in_shape, out_shape) -> np.ndarray:
    """bool out_shape: output voxels whose input position (to_input: output → input voxel) is outside
    the hull of the input voxel centres."""
    index = [np.arange(n, dtype=np.float64).reshape([-1 if a == b else 1 for b in range(3)])
             for a, n in enumerate(out_shape)]
    outside = np.zeros(tuple(out_shape), dtype=bool)
    for i, n in enumerate(in_shape):
        pos = to_input[i, 3] + sum(to_input[i, a] * index[a] for a in range(3))
        outside |= (pos < -FOV_TOL) | (pos > n - 1 + FOV_TOL)
    return outside


def _resample_general(array, affine, out_shape, out_affine, *, nearest, fill, anti_alias):
    """Oblique input (slow path): Gaussian anti-aliasing along each input axis that the output grid
    samples more coarsely (f from the output spacing projected on that axis' direction), then trilinear
    or nearest sampling at each output voxel's world position; outside the source: `fill`."""
    from scipy import ndimage

    to_input = np.linalg.solve(affine, out_affine)
    data = array if nearest else array.astype(np.float32, copy=False)   # affine_transform does not write to it
    if anti_alias and not nearest:
        out_sp = np.diag(out_affine[:3, :3])
        for axis in range(3):
            column = affine[:3, axis]
            in_sp = float(np.linalg.norm(column))
            sigma = antialias_sigma(float(np.linalg.norm(out_sp * column / in_sp)) / in_sp)
            if sigma > 0:
                data = ndimage.gaussian_filter1d(data, sigma, axis=axis, mode="nearest", truncate=TRUNCATE)
    out = ndimage.affine_transform(data, to_input[:3, :3], offset=to_input[:3, 3],
                                   output_shape=tuple(int(n) for n in out_shape), order=0 if nearest else 1,
                                   mode="nearest")
    out[_outside_source(to_input, array.shape, out_shape)] = fill
    return out
