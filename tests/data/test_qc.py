"""QC statistics: body mask includes the lungs, fractions and percentiles on a simple phantom."""
from __future__ import annotations

import numpy as np

from simcrop.data.qc import body_mask, qc_stats


def test_body_includes_enclosed_lungs_and_excludes_outside_air():
    hu = np.full((40, 40, 6), -1000, np.int16)
    hu[5:35, 5:35] = 40                     # body: 30 x 30
    hu[10:20, 10:30] = -850                 # lung inside the body: 10 x 20
    body = body_mask(hu)
    assert body.sum() == 30 * 30 * 6
    stats = qc_stats(hu)
    assert abs(stats["lung_air_fraction"] - 200 / 900) < 1e-9
    assert abs(stats["body_fraction"] - 900 / 1600) < 1e-9
    assert stats["hu_p1"] == -850 and stats["hu_p50"] == 40


def test_implausible_hu_tells_stored_values_from_a_scan_without_air():
    from simcrop.data.qc import implausible_hu

    hu = np.full((40, 40, 6), -1000, np.int16)
    hu[5:35, 5:35] = 40
    hu[10:20, 10:30] = -850
    assert implausible_hu(hu) is None
    for padding in (-1024, -2048, -3024):                  # outside the field of view: not a problem
        padded = np.pad(hu, 10, constant_values=padding)
        assert implausible_hu(padded) is None
    stored = hu.astype(np.int32) + 1024
    assert "stored values (HU + 1024, air = 0) read as HU" in implausible_hu(stored)
    assert "stored values" in implausible_hu(np.pad(stored, 10, constant_values=-2000))
    inside = hu[5:35, 20:35]                               # soft tissue and bone only, no lung, no air
    inside = np.where(np.arange(15)[None, :, None] < 5, 900, 40) + 0 * inside
    message = implausible_hu(inside)
    assert message.startswith("implausible HU: no air (0.00% of voxels in [-1100, -500] HU outside padding; values 40 to 900)")
    assert message.endswith("a CT holds air around the body or in the lungs")
