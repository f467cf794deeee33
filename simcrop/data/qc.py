"""Quality-control statistics of a preprocessed CT volume (HU), computed inside the body.

Body = voxels above -500 HU, largest connected component, holes filled slice by slice in the axial
plane (so the lungs and airways count as body, the air around the patient and a detached table do not).
On large outputs the statistics use every k-th voxel per axis (≤ ~4 M voxels): they are fractions and
percentiles, and the subsample keeps them within a fraction of a percent.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

BODY_HU = -500.0
LUNG_HU = (-950.0, -500.0)
MAX_QC_VOXELS = 4_000_000


def body_mask(hu: np.ndarray) -> np.ndarray:
    """hu: (X, Y, Z) in HU, RAS → bool (X, Y, Z)."""
    mask = hu > BODY_HU
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    mask = labels == int(sizes.argmax())
    for z in range(mask.shape[2]):
        mask[:, :, z] = ndimage.binary_fill_holes(mask[:, :, z])
    return mask


def qc_stats(hu: np.ndarray) -> dict:
    """HU percentiles (p1, p50, p99) inside the body, lung-air fraction (−950…−500 HU over body
    voxels) and body fraction (body voxels over all voxels) of `hu (X, Y, Z)`."""
    step = max(1, int(np.ceil((hu.size / MAX_QC_VOXELS) ** (1 / 3))))
    sub = hu[::step, ::step, ::step]
    body = body_mask(sub)
    values = sub[body].astype(np.float32)
    if values.size == 0:
        nan = float("nan")
        return dict(hu_p1=nan, hu_p50=nan, hu_p99=nan, lung_air_fraction=nan, body_fraction=0.0)
    p1, p50, p99 = np.percentile(values, [1, 50, 99])
    lung = np.count_nonzero((values >= LUNG_HU[0]) & (values <= LUNG_HU[1]))
    return dict(hu_p1=float(p1), hu_p50=float(p50), hu_p99=float(p99),
                lung_air_fraction=float(lung / values.size), body_fraction=float(values.size / sub.size))
