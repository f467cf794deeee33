"""The preset table and the grid geometry (RAS/LPS affines describe the same world)."""
from __future__ import annotations

import numpy as np

from simcrop.data.synthetic.presets import PRESETS, Grid, draw_grid


def test_preset_table():
    small, ctrate = PRESETS["small"], PRESETS["ctrate"]
    assert small.matrix == 128 and 2.5 <= small.xy_spacing_mm[0] < small.xy_spacing_mm[1] <= 2.9
    assert 4.5 <= small.z_spacing_mm[0] and small.z_spacing_mm[1] <= 5.5
    assert ctrate.matrix == 512 and ctrate.xy_spacing_mm[0] < 0.8 and 180 <= ctrate.slices[0] <= ctrate.slices[1] <= 230


def test_lps_and_ras_put_voxels_at_the_same_world_point():
    ras = Grid((4, 5, 3), (0.7, 0.7, 1.5), (-10.0, -20.0, -300.0), "RAS")
    lps = Grid(ras.shape, ras.spacing, ras.origin, "LPS")
    data = np.arange(np.prod(ras.shape)).reshape(ras.shape)
    flipped = lps.to_file_order(data)
    ijk = np.array([1, 3, 2])
    world = ras.affine() @ [*ijk, 1]
    ijk_lps = np.linalg.solve(lps.affine(), world)[:3].round().astype(int)
    assert flipped[tuple(ijk_lps)] == data[tuple(ijk)]


def test_draw_grid_mixes_orientations():
    seen = {draw_grid(PRESETS["small"], np.random.default_rng(i))[0].orientation for i in range(20)}
    assert seen == {"RAS", "LPS"}
