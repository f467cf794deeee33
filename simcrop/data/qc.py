"""Quality-control statistics of a preprocessed CT volume (HU), computed inside the body.

Body = voxels above -500 HU, largest connected component, holes filled slice by slice in the axial
plane (so the lungs and airways count as body, the air around the patient and a detached table do not).
On large outputs the statistics use every k-th voxel per axis (≤ ~4 M voxels): they are fractions and
percentiles, and the subsample keeps them within a fraction of a percent.

`implausible_hu` is the input-side check (preprocessing quarantines with its reason): every CT holds
air, around the patient or in the lungs and airways, at -1000 HU. A volume with (almost) no voxel in
the air range [-1100, -500] is not in HU; when its values sit 1024 higher instead, they are the stored
values of a scanner (HU + 1024, air = 0) whose rescale intercept was never applied. Padding outside the
field of view (-1024, -2048, -3024, ...) is neither air nor a problem: the range ignores it, except
-1024, which is air anyway.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

BODY_HU = -500.0
LUNG_HU = (-950.0, -500.0)
MAX_QC_VOXELS = 4_000_000
AIR_HU = (-1100.0, -500.0)          # air and lung; below it only padding, above it tissue
SOFT_TISSUE_HU = (-100.0, 100.0)
STORED_OFFSET = 1024                # stored value = HU + 1024 on most scanners (intercept -1024)
MIN_AIR_FRACTION = 1e-3             # real chest CTs: 20-60 % of voxels; stored values: none
# the stored-value signature: air and soft tissue both found 1024 higher (a crop inside the body in HU
# has its soft tissue in the shifted air range, but not a tenth of its voxels at 924-1124 HU)
MIN_SHIFTED_AIR_FRACTION = 0.01
MIN_SHIFTED_TISSUE_FRACTION = 0.10


AXIAL_4 = np.zeros((3, 3, 3), dtype=bool)      # 4-connectivity within an axial slice, none across slices
AXIAL_4[:, :, 1] = ndimage.generate_binary_structure(2, 1)


def fill_holes_axial(mask: np.ndarray) -> np.ndarray:
    """`mask` with the holes of each axial slice filled: exactly `ndimage.binary_fill_holes` slice by
    slice, in one labelling of the background (a hole is a background component of a slice, 4-connected,
    that touches no x/y edge of it)."""
    labels, n = ndimage.label(~mask, structure=AXIAL_4)
    reaches_edge = np.zeros(n + 1, dtype=bool)
    reaches_edge[0] = True                     # label 0: the mask itself
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        reaches_edge[edge] = True
    return mask | ~reaches_edge[labels]


def body_mask(hu: np.ndarray) -> np.ndarray:
    """hu: (X, Y, Z) in HU, RAS → bool (X, Y, Z)."""
    mask = hu > BODY_HU
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return fill_holes_axial(labels == int(sizes.argmax()))


def _subsample(hu: np.ndarray) -> np.ndarray:
    step = max(1, int(np.ceil((hu.size / MAX_QC_VOXELS) ** (1 / 3))))
    return hu[::step, ::step, ::step]


def _fraction_in(values: np.ndarray, lo: float, hi: float, of: int) -> float:
    return np.count_nonzero((values >= lo) & (values <= hi)) / max(of, 1)


def implausible_hu(hu: np.ndarray) -> str | None:
    """Why `hu (X, Y, Z)` cannot be HU ("implausible HU: ..."), or None when it holds air.

    Cheap: a few range counts on the ≤ ~4 M-voxel subsample the QC statistics use; fractions are of
    the voxels not below -1100 HU (padding outside the field of view is left out).
    """
    sub = _subsample(hu)
    if _fraction_in(sub, *AIR_HU, of=sub.size) >= MIN_AIR_FRACTION:    # the usual case: one count
        return None
    in_view = np.count_nonzero(sub >= AIR_HU[0])       # padding must not dilute the fractions
    air = _fraction_in(sub, *AIR_HU, of=in_view)
    if air >= MIN_AIR_FRACTION:
        return None
    lo, hi = AIR_HU
    found = (f"no air ({air:.2%} of voxels in [{lo:g}, {hi:g}] HU outside padding; values {float(hu.min()):g} to "
             f"{float(hu.max()):g})")
    shifted = [(a + STORED_OFFSET, b + STORED_OFFSET) for a, b in (AIR_HU, SOFT_TISSUE_HU)]
    shifted_air, shifted_tissue = (_fraction_in(sub, a, b, of=in_view) for a, b in shifted)
    if shifted_air >= MIN_SHIFTED_AIR_FRACTION and shifted_tissue >= MIN_SHIFTED_TISSUE_FRACTION:
        (a0, a1), (t0, t1) = shifted
        return (f"implausible HU: {found}; {shifted_air:.0%} in [{a0:g}, {a1:g}] and {shifted_tissue:.0%} in "
                f"[{t0:g}, {t1:g}]: air and soft tissue {STORED_OFFSET} too high, stored values (HU + "
                f"{STORED_OFFSET}, air = 0) read as HU without the rescale intercept")
    return f"implausible HU: {found}; a CT holds air around the body or in the lungs"


def percentiles(values: np.ndarray, q) -> list[float]:
    """`np.percentile(values, q)` (linear interpolation between order statistics), exact in float64; for
    integer values from a histogram (one counting pass, no sort)."""
    if values.dtype.kind not in "iu":
        return [float(v) for v in np.percentile(values.astype(np.float64), q)]
    base = int(values.min())
    cumulative = np.cumsum(np.bincount(np.subtract(values, base, dtype=np.intp).ravel()))
    out = []
    for rank in (np.asarray(q, dtype=np.float64) / 100.0) * (values.size - 1):
        below = int(np.floor(rank))
        a, b = (float(base + np.searchsorted(cumulative, r, side="right"))
                for r in (below, min(below + 1, values.size - 1)))
        out.append(a + (rank - below) * (b - a))
    return out


def qc_stats(hu: np.ndarray) -> dict:
    """HU percentiles (p1, p50, p99) inside the body, lung-air fraction (−950…−500 HU over body
    voxels) and body fraction (body voxels over all voxels) of `hu (X, Y, Z)`. On outputs over
    MAX_QC_VOXELS these are of the subsample (module docstring); on it, the percentiles are exact."""
    sub = _subsample(hu)
    body = body_mask(sub)
    values = sub[body]
    if values.size == 0:
        nan = float("nan")
        return dict(hu_p1=nan, hu_p50=nan, hu_p99=nan, lung_air_fraction=nan, body_fraction=0.0)
    p1, p50, p99 = percentiles(values, [1, 50, 99])
    lung = np.count_nonzero((values >= LUNG_HU[0]) & (values <= LUNG_HU[1]))
    return dict(hu_p1=p1, hu_p50=p50, hu_p99=p99,
                lung_air_fraction=float(lung / values.size), body_fraction=float(values.size / sub.size))
