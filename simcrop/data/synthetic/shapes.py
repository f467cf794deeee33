"""Geometric primitives on a voxel grid: smooth noise fields, tubes along polylines, ellipsoids.

All coordinates are *local* millimetres (u, v, w) of the phantom: u = x − cx (patient right +),
v = y − cy (anterior +), w = depth below the lung apex (inferior +). Arrays are canonical RAS order.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree


class Frame:
    """Local coordinates of a grid. u, v, w: (X,), (Y,), (Z,) float32 mm; spacing (3,) mm."""

    def __init__(self, grid, cx: float, cy: float, z_apex: float):
        x, y, z = grid.axes_mm()
        self.grid = grid
        self.shape = grid.shape
        self.spacing = np.asarray(grid.spacing, np.float32)
        self.u, self.v, self.w = x - cx, y - cy, (z_apex - z).astype(np.float32)
        self.cx, self.cy, self.z_apex = cx, cy, z_apex

    def to_ras(self, uvw) -> list[float]:
        u, v, w = (float(c) for c in uvw)
        return [round(u + self.cx, 2), round(v + self.cy, 2), round(self.z_apex - w, 2)]

    def to_index(self, uvw) -> np.ndarray:
        """Local mm (3,) → nearest canonical voxel index (3,) int, clipped into the grid."""
        u, v, w = uvw
        idx = [np.abs(self.u - u).argmin(), np.abs(self.v - v).argmin(), np.abs(self.w - w).argmin()]
        return np.asarray(idx, int)

    def box(self, lo, hi) -> tuple[slice, slice, slice]:
        """Index box covering local mm range [lo, hi] (3,) each (w is decreasing along axis 2)."""
        out = []
        for axis, (a, b) in zip((self.u, self.v, self.w), zip(lo, hi)):
            inside = np.flatnonzero((axis >= min(a, b)) & (axis <= max(a, b)))
            out.append(slice(int(inside[0]), int(inside[-1]) + 1) if inside.size else slice(0, 0))
        return tuple(out)

    def coords(self, box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable local coordinates of a box: (x,1,1), (1,y,1), (1,1,z)."""
        return (self.u[box[0]][:, None, None], self.v[box[1]][None, :, None], self.w[box[2]][None, None, :])


def smooth_noise(rng: np.random.Generator, frame: Frame, scale_mm: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with correlation length ~scale_mm.

    Drawn on a coarse grid (scale/2 spacing) and linearly upsampled: (X, Y, Z) float32.
    The coarse draw keeps the cost independent of the preset's resolution.
    """
    step = scale_mm / 2.0
    extent = frame.spacing * (np.asarray(frame.shape) - 1)
    coarse_shape = tuple(int(np.ceil(e / step)) + 4 for e in extent)
    field = ndimage.gaussian_filter(rng.standard_normal(coarse_shape).astype(np.float32), 1.0, mode="wrap")
    field /= field.std() + 1e-6
    # sample coarse index (i * spacing / step + 1.5) for each fine voxel; separable, so one axis at a time
    out = field
    for axis, n in enumerate(frame.shape):
        pos = np.arange(n) * frame.spacing[axis] / step + 1.5
        lo = np.floor(pos).astype(int)
        frac = (pos - lo).astype(np.float32)
        a = np.take(out, lo, axis=axis)
        b = np.take(out, lo + 1, axis=axis)
        shape = [1, 1, 1]
        shape[axis] = n
        out = a + (b - a) * frac.reshape(shape)
    return np.ascontiguousarray(out, dtype=np.float32)


def densify(points, radii, step_mm: float, smooth: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Chaikin-smoothed polyline sampled every `step_mm`. points: (N, 3) mm; radii: (N,) mm."""
    pts = np.asarray(points, float)
    rad = np.asarray(radii, float)
    for _ in range(smooth):   # corner cutting: a curved vessel, not a kinked one
        if len(pts) < 3:
            break
        q = 0.75 * pts[:-1] + 0.25 * pts[1:]
        r = 0.25 * pts[:-1] + 0.75 * pts[1:]
        qr = 0.75 * rad[:-1] + 0.25 * rad[1:]
        rr = 0.25 * rad[:-1] + 0.75 * rad[1:]
        pts = np.vstack([pts[:1], np.column_stack([q, r]).reshape(-1, 3), pts[-1:]])
        rad = np.concatenate([rad[:1], np.column_stack([qr, rr]).ravel(), rad[-1:]])
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.arange(0.0, arc[-1] + step_mm, step_mm)
    dense = np.column_stack([np.interp(t, arc, pts[:, k]) for k in range(3)])
    return dense, np.interp(t, arc, rad)


def tube(frame: Frame, points, radii, min_radius_vox: float = 0.0):
    """Voxels within radius of a polyline, chunked so each piece only scans its own bounding box.

    points: (N, 3) local mm; radii: (N,) mm (or scalar). Yields (box, mask) pairs; mask is bool on the box.
    `min_radius_vox` keeps wires visible on coarse grids (radius ≥ that many voxels).
    """
    radii = np.broadcast_to(np.asarray(radii, float), (len(points),))
    floor = min_radius_vox * float(frame.spacing.min())
    radii = np.maximum(radii, floor)
    dense, rad = densify(points, radii, step_mm=max(0.25, 0.3 * float(rad_min(radii))))
    chunk = max(8, int(4 * radii.max() / max(0.25, 0.3 * rad_min(radii))))
    for start in range(0, len(dense), chunk):
        sel = slice(max(0, start - 1), start + chunk + 1)
        p, r = dense[sel], rad[sel]
        box = frame.box(p.min(0) - r.max(), p.max(0) + r.max())
        if any(s.stop - s.start == 0 for s in box):
            continue
        uu, vv, ww = np.meshgrid(frame.u[box[0]], frame.v[box[1]], frame.w[box[2]], indexing="ij")
        query = np.column_stack([uu.ravel(), vv.ravel(), ww.ravel()])
        dist, idx = cKDTree(p).query(query, distance_upper_bound=float(r.max()))
        ok = np.isfinite(dist)
        inside = np.zeros(len(query), bool)
        inside[ok] = dist[ok] <= r[idx[ok]]
        yield box, inside.reshape(uu.shape)


def rad_min(radii) -> float:
    return float(np.min(radii))


def paint_tube(labels: np.ndarray, frame: Frame, points, radii, value: int, where=None, **kw) -> None:
    """labels[tube] = value, optionally only where `where(labels_box)` is True."""
    for box, mask in tube(frame, points, radii, **kw):
        sub = labels[box]
        if where is not None:
            mask &= where(sub)
        sub[mask] = value


def ellipsoid(frame: Frame, center, radii, rot_deg: float = 0.0, lumpy: float = 0.0,
              rng: np.random.Generator | None = None):
    """Bool mask of a (rotated in the axial plane, optionally lobulated) ellipsoid on its bounding box.

    center: (3,) local mm; radii: (3,) mm along (rotated u, rotated v, w). Returns (box, mask).
    `lumpy` > 0 perturbs the surface by that relative amount with a smooth random field.
    """
    center = np.asarray(center, float)
    radii = np.asarray(radii, float)
    reach = radii.max() * (1 + lumpy) + frame.spacing.max()
    box = frame.box(center - reach, center + reach)
    if any(s.stop - s.start == 0 for s in box):
        return box, np.zeros([s.stop - s.start for s in box], bool)
    u, v, w = frame.coords(box)
    du, dv, dw = u - center[0], v - center[1], w - center[2]
    c, s = np.cos(np.deg2rad(rot_deg)), np.sin(np.deg2rad(rot_deg))
    a1, a2 = du * c + dv * s, -du * s + dv * c
    d = np.sqrt((a1 / radii[0]) ** 2 + (a2 / radii[1]) ** 2 + (dw / radii[2]) ** 2)
    if lumpy > 0 and rng is not None:
        shape = d.shape
        field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32),
                                        sigma=[max(1.0, 0.35 * r / sp) for r, sp in
                                               zip(radii, frame.spacing)], mode="nearest")
        field /= field.std() + 1e-6
        d = d / (1 + lumpy * np.clip(field, -2, 2))
    return box, d <= 1.0


def superellipse_radius(u, v, a, b, p: float = 2.3):
    """Normalised radius of a superellipse (1 on the outline): (|u|/a)^p + (|v|/b)^p, ^(1/p)."""
    return (np.abs(u / a) ** p + np.abs(v / b) ** p) ** (1.0 / p)
