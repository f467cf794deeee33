"""Per-preset grid sizes and spacings, in one table, and the per-case scan geometry drawn from them.

Array convention used throughout the generator: volumes are built in *canonical RAS voxel order*
(axis 0 → patient Right, axis 1 → Anterior, axis 2 → Superior) and flipped to LPS order only when
written, so every geometric rule is written once, in RAS millimetres.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Preset:
    """Grid of one preset. Ranges are (low, high), drawn uniformly per scan."""
    matrix: int                            # in-plane voxels (rows = columns)
    slices: tuple[int, int]                # number of axial slices
    xy_spacing_mm: tuple[float, float]     # in-plane pixel spacing
    z_spacing_mm: tuple[float, float]      # slice spacing
    noise_scale: float                     # image noise relative to a 0.7 mm / 1.5 mm reconstruction


PRESETS: dict[str, Preset] = {
    # CPU demo: ~1 M voxels per volume; coverage 128 x 2.7 mm ≈ 350 mm, 64 x 5 mm ≈ 320 mm.
    "small": Preset(matrix=128, slices=(60, 68), xy_spacing_mm=(2.5, 2.9), z_spacing_mm=(4.5, 5.5),
                    noise_scale=0.35),
    # CT-RATE-like grid for benchmarks: 512 x 512 x ~200 at ~0.7 mm / ~1.5 mm.
    "ctrate": Preset(matrix=512, slices=(190, 215), xy_spacing_mm=(0.65, 0.78), z_spacing_mm=(1.4, 1.6),
                     noise_scale=1.0),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"synthesize.preset must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]


@dataclass(frozen=True)
class Grid:
    """Voxel grid of one scan in canonical RAS order.

    shape: (X, Y, Z) voxels; spacing: (sx, sy, sz) mm; origin: RAS mm of voxel (0, 0, 0).
    orientation: "RAS" or "LPS", the voxel order the file is written in (world positions are identical).
    """
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    orientation: str

    def axes_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """RAS world coordinates (mm) along each canonical axis: (X,), (Y,), (Z,) float32."""
        return tuple((o + s * np.arange(n)).astype(np.float32)
                     for o, s, n in zip(self.origin, self.spacing, self.shape))

    def affine(self) -> np.ndarray:
        """(4, 4) voxel → RAS mm affine of the array as written (after `to_file_order`)."""
        sx, sy, sz = self.spacing
        aff = np.diag([sx, sy, sz, 1.0])
        aff[:3, 3] = self.origin
        if self.orientation == "LPS":
            # flipped axes 0/1: file voxel 0 is the canonical last voxel (the patient's left, posterior)
            aff[0, 0], aff[1, 1] = -sx, -sy
            aff[0, 3] = self.origin[0] + sx * (self.shape[0] - 1)
            aff[1, 3] = self.origin[1] + sy * (self.shape[1] - 1)
        return aff

    def to_file_order(self, array: np.ndarray) -> np.ndarray:
        """Canonical RAS-ordered (X, Y, Z) array → the voxel order matching `affine()`."""
        return np.ascontiguousarray(array[::-1, ::-1, :]) if self.orientation == "LPS" else array

    def ras_to_voxel(self, ras_mm) -> np.ndarray:
        """RAS mm (3,) → canonical voxel index (3,) float."""
        return (np.asarray(ras_mm, float) - np.asarray(self.origin)) / np.asarray(self.spacing)

    def voxel_to_ras(self, ijk) -> np.ndarray:
        return np.asarray(self.origin) + np.asarray(ijk, float) * np.asarray(self.spacing)


def draw_grid(preset: Preset, rng: np.random.Generator) -> tuple[Grid, dict]:
    """Per-case grid and where the patient lies in it.

    Returns the grid and `place`: body centre (cx, cy) in RAS mm and z of the lung apex (mm).
    The origin mimics scanner coordinates: table-centred x, y around −(150…250) mm, z a couch position.
    """
    n = preset.matrix
    nz = int(rng.integers(preset.slices[0], preset.slices[1] + 1))
    sxy = float(np.round(rng.uniform(*preset.xy_spacing_mm) * 1024) / 1024)  # DICOM-like binary fractions
    sz = float(np.round(rng.uniform(*preset.z_spacing_mm), 2))
    fov_center = np.array([rng.uniform(-8, 8), rng.uniform(-40, 0), rng.uniform(-420, -120)])
    extent = np.array([(n - 1) * sxy, (n - 1) * sxy, (nz - 1) * sz])
    origin = fov_center - extent / 2
    orientation = "RAS" if rng.random() < 0.5 else "LPS"
    grid = Grid((n, n, nz), (sxy, sxy, sz), tuple(float(o) for o in np.round(origin, 3)), orientation)
    z_top = origin[2] + extent[2]
    place = {
        "cx": float(fov_center[0] + rng.uniform(-10, 10)),
        "cy": float(fov_center[1] + rng.uniform(-15, 5)),
        "z_apex": float(z_top - rng.uniform(15, 45)),
    }
    return grid, place
