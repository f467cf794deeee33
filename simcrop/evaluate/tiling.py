"""Sliding-window tiling of a whole preprocessed volume with the model's crop, on one patch lattice.

Shared by `simcrop heatmap` (per-cell cosine, `volume_heatmap.cell_similarity`) and the linear probe's
whole-volume features (`probe.view: tiles`, `simcrop.evaluate.probe_features.tiled_features`).

    volume (X, Y, Z) ──PadTo(layout.padded), symmetric──► tiles of `crop` voxels, stride half a crop
    (rounded down to a multiple of the patch): every voxel lies in at least one tile, and the tiles'
    patches share one lattice of `layout.cells` cells over the padded volume.

An axis no longer than the crop gets one tile: the eval chain's pad + centre crop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from simcrop.data.transforms import PadTo


@dataclass
class Tiling:
    """Crops of `crop` voxels over the volume padded to `padded` (`before` voxels of pad first); tile
    starts per axis are multiples of the patch, so all tiles share one patch lattice of `cells`."""

    shape: tuple
    crop: tuple
    patch: tuple
    padded: tuple
    before: tuple
    starts: tuple                  # per axis: tuple of tile starts (padded voxels)

    @property
    def cells(self) -> tuple:
        return tuple(p // q for p, q in zip(self.padded, self.patch))

    @property
    def n_tiles(self) -> int:
        return math.prod(len(s) for s in self.starts)

    @property
    def corners(self) -> list[tuple[int, int, int]]:
        """Every tile's start (x, y, z) in padded voxels, x slowest."""
        return [(x, y, z) for x in self.starts[0] for y in self.starts[1] for z in self.starts[2]]

    def cell_slices(self, corner: Sequence[int], grid: Sequence[int]) -> tuple[slice, slice, slice]:
        """The lattice cells a tile starting at `corner` covers (`grid`: patches per tile and axis)."""
        return tuple(slice(c // p, c // p + g) for c, p, g in zip(corner, self.patch, grid))

    def inside_fraction(self) -> np.ndarray:
        """(*cells) float64: the share of each lattice cell's voxels that lie inside the (unpadded) volume."""
        axes = []
        for g, p, b, n in zip(self.cells, self.patch, self.before, self.shape):
            start = np.arange(g) * p - b
            axes.append(np.clip(np.minimum(start + p, n) - np.maximum(start, 0), 0, None) / p)
        return axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]

    def coverage(self) -> np.ndarray:
        """(*cells) int64: how many tiles hold each lattice cell."""
        grid = tuple(c // p for c, p in zip(self.crop, self.patch))
        count = np.zeros(self.cells, dtype=np.int64)
        for corner in self.corners:
            count[self.cell_slices(corner, grid)] += 1
        return count


def tiling(shape: Sequence[int], crop: Sequence[int], patch: Sequence[int]) -> Tiling:
    """Sliding-window layout: one tile (the eval chain's centre crop) along an axis no longer than the
    crop; else stride half the crop (rounded down to a multiple of the patch) and the volume padded
    symmetrically to crop + m · stride, so the last tile ends at the padded edge."""
    padded, starts = [], []
    for n, c, p in zip(shape, crop, patch):
        n, c, p = int(n), int(c), int(p)
        stride = max(p, (c // 2) // p * p)
        size = c if n <= c else c + math.ceil((n - c) / stride) * stride
        padded.append(size)
        starts.append(tuple(range(0, size - c + 1, stride)))
    before = tuple((s - int(n)) // 2 for s, n in zip(padded, shape))    # PadTo's split: extra // 2 first
    return Tiling(tuple(int(n) for n in shape), tuple(int(c) for c in crop), tuple(int(p) for p in patch),
                  tuple(padded), before, tuple(starts))


def tile_batches(image, layout: Tiling, pad_mode: str = "reflect",
                 batch_size: int = 4) -> Iterator[tuple[list[tuple[int, int, int]], torch.Tensor]]:
    """image (X, Y, Z) (array or tensor) → batches of (corners, tiles (B, 1, *crop) float32), padded with
    `pad_mode` (transforms.PadTo: symmetric, air where reflect cannot) as `layout` says."""
    image = torch.as_tensor(np.ascontiguousarray(image) if isinstance(image, np.ndarray) else image).float()
    padded = PadTo(layout.padded, pad_mode)(image[None])[0]
    (cx, cy, cz), corners = layout.crop, layout.corners
    for first in range(0, len(corners), batch_size):
        chunk = corners[first:first + batch_size]
        yield chunk, torch.stack([padded[x:x + cx, y:y + cy, z:z + cz] for x, y, z in chunk])[:, None]
