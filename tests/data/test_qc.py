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
