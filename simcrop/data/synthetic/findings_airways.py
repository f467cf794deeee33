"""Airway and interstitial findings: bronchiectasis, peribronchial thickening, septal thickening, mosaic.

Functions of a `findings.Planter` (registered in `findings.PLANTERS`). HU follow what a chest CT shows:
bronchiectasis = dilated air-filled tubes (−990 HU) with a soft-tissue wall; peribronchial thickening =
soft-tissue cuffs around small airways; interlobular septal thickening = thin reticular lines outlining
secondary lobules in the subpleural lung; mosaic attenuation = patchy lobular regions of lower lung
attenuation (air trapping) beside slightly denser lung. Each finding is one lesion id (one mask).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .shapes import smooth_noise, tube

# (lobe codes, location text) choices of the bilateral / multilobar findings
BOTH_LOWER = ((3, 5), "both lower lobes")
BOTH_LUNGS = ((1, 2, 3, 4, 5), "both lungs")
RIGHT_LUNG = ((1, 2, 3), "right lung")
LEFT_LUNG = ((4, 5), "left lung")


def _pick_lobes(p, options, weights) -> tuple[tuple[int, ...], str]:
    lobes, loc = options[int(p.rng.choice(len(options), p=np.asarray(weights) / np.sum(weights)))]
    return tuple(lobes), loc


def _single(lobe: int):
    from .phantom import LOBES
    return (lobe,), LOBES[lobe]


def _branches(p, lobe: int, n: int) -> list[np.ndarray]:
    """n airway-like polylines (local mm) running from the lobe's hilar side out into `lobe`."""
    side = 1 if lobe <= 3 else -1
    hilum = p.body.hilum[side]
    paths = []
    for _ in range(n):
        ends = [e for e in (p._lung_point(lobe, 4) for _ in range(3)) if e is not None]
        if not ends:
            continue
        end = max(ends, key=lambda e: float(np.linalg.norm(e - hilum)))   # peripheral, not hilar
        start = hilum + (end - hilum) * p.rng.uniform(0.3, 0.5)
        mid = (start + end) / 2 + p.rng.normal(0, 4, 3)
        paths.append(np.array([start, mid, end]))
    return paths


def _tubes_region(p, paths, radii, box=None):
    """(box, bool mask on box) of the union of tubes; radii: one scalar or (N,) array per path."""
    fr = p.frame
    floor = 0.55 * float(fr.spacing.min())
    if box is None:
        reach = max(float(np.max(r)) for r in radii) + floor + 2 * float(fr.spacing.max())
        pts = np.vstack(paths)
        box = fr.box(pts.min(0) - reach, pts.max(0) + reach)
    region = np.zeros([s.stop - s.start for s in box], bool)
    for path, rad in zip(paths, radii):
        for sub, m in tube(fr, path, rad, min_radius_vox=0.55):
            rel = tuple(slice(s.start - o.start, s.stop - o.start) for s, o in zip(sub, box))
            if all(r.start >= 0 and r.stop <= o.stop - o.start for r, o in zip(rel, box)):
                region[rel] |= m
    return box, region


def bronchiectasis(p) -> None:
    rng = p.rng
    if rng.random() < 0.3:
        lobes, loc = BOTH_LOWER
    else:
        lobes, loc = _single(int(rng.choice([3, 5, 3, 5, 2, 4, 1])))
    kind = str(rng.choice(["cylindrical", "cylindrical", "varicose", "traction"]))
    lumen, wall = float(rng.uniform(2.5, 5.0)), float(rng.uniform(1.0, 1.8))
    paths = [q for lobe in lobes for q in _branches(p, lobe, int(rng.integers(2, 4)))]
    if not paths:
        return
    beads = [np.array([1.0, 1.35, 0.9]) if kind == "varicose" else np.ones(3) for _ in paths]
    box, outer = _tubes_region(p, paths, [lumen * b + wall for b in beads])
    _, inner = _tubes_region(p, paths, [lumen * b for b in beads], box=box)
    region = outer & np.isin(p.lobes[box], lobes)
    hu = np.where(inner, -990.0, rng.uniform(15, 45)) + p._texture(region.shape, 6)
    p._commit(box, region, "Bronchiectasis", loc, paths[0][-1], 2 * lumen, hu=hu.astype(np.float32),
              lobe=lobes[0], kind=kind, count=len(paths))


def peribronchial(p) -> None:
    rng = p.rng
    lobes, loc = _pick_lobes(p, [BOTH_LOWER, BOTH_LUNGS, _single(3), _single(5), _single(2), _single(1)],
                             [3, 2, 1, 1, 0.6, 0.6])
    lumen, cuff = float(rng.uniform(1.5, 2.5)), float(rng.uniform(1.8, 3.0))
    per_lobe = 1 if len(lobes) > 3 else int(rng.integers(2, 4))
    paths = [q for lobe in lobes for q in _branches(p, lobe, per_lobe)]
    if not paths:
        return
    box, outer = _tubes_region(p, paths, [lumen + cuff] * len(paths))
    _, inner = _tubes_region(p, paths, [lumen] * len(paths), box=box)
    lung = np.isin(p.lobes[box], lobes)
    rec = p._commit(box, outer & ~inner & lung, "Peribronchial thickening", loc, paths[0][-1], cuff,
                    hu=(rng.uniform(-30, 30) + p._texture(outer.shape, 8)).astype(np.float32),
                    lobe=lobes[0], count=len(paths))
    if rec:                              # the airway lumen inside the cuff is air (not part of the lesion)
        p.hu[box][inner & lung & (p.mask[box] == 0)] = -990.0


def septal(p) -> None:
    """Polygonal (Voronoi) outlines of secondary lobules, 10–20 mm, in the subpleural lung."""
    rng, fr = p.rng, p.frame
    lobes, loc = _pick_lobes(p, [BOTH_LOWER, BOTH_LUNGS, _single(3), _single(5), RIGHT_LUNG, LEFT_LUNG],
                             [4, 2, 1, 1, 0.5, 0.5])
    idx = np.argwhere(np.isin(p.lobes, lobes))
    if idx.size == 0:
        return
    box = tuple(slice(int(lo), int(hi) + 1) for lo, hi in zip(idx.min(0), idx.max(0)))
    lung = p.lobes[box] > 0
    depth = ndimage.distance_transform_edt(lung, sampling=fr.spacing)
    band = np.isin(p.lobes[box], lobes) & (depth <= rng.uniform(8, 15)) & (p.mask[box] == 0)
    cells = np.argwhere(band)
    if len(cells) < 10:
        return
    mm = cells * fr.spacing
    lobule = float(rng.uniform(10, 20))
    n_seeds = int(np.clip(len(cells) * np.prod(fr.spacing) / lobule ** 3, 4, 4000))
    seeds = mm[rng.choice(len(mm), size=n_seeds, replace=False)] + rng.uniform(-2, 2, (n_seeds, 3))
    label = np.full(band.shape, -1, np.int32)
    label[tuple(cells.T)] = cKDTree(seeds).query(mm)[1]
    keep = rng.uniform(0.35, 0.6)        # thickening is patchy: only some septa (cell pairs) are visible
    lines = np.zeros(band.shape, bool)
    for axis in (0, 1):                  # in-plane edges: septa are seen as lines on axial slices
        a = np.moveaxis(label, axis, 0)
        lo, hi = np.minimum(a[:-1], a[1:]), np.maximum(a[:-1], a[1:])
        edge = (lo >= 0) & (lo != hi) & (((lo * 7919 + hi * 104729) % 1000) < keep * 1000)
        np.moveaxis(lines, axis, 0)[:-1] |= edge
    if fr.spacing[0] < 1.2:              # thickened septa are 1–2 mm: two voxels on a fine grid
        lines |= ndimage.binary_dilation(lines, np.array([[[0], [1], [0]], [[1], [1], [1]], [[0], [1], [0]]], bool)) & band
    frac = float(np.clip(1.6 / fr.spacing[0], 0.3, 1.0))        # partial volume of a thin line
    hu = -860 * (1 - frac) + rng.uniform(-20, 30) * frac
    c = mm[len(mm) // 2] / fr.spacing
    center = [fr.u[box[0].start + int(c[0])], fr.v[box[1].start + int(c[1])], fr.w[box[2].start + int(c[2])]]
    p._commit(box, lines, "Interlobular septal thickening", loc, center, lobule,
              hu=(hu + p._texture(lines.shape, 15)).astype(np.float32), blend="max", lobe=lobes[0])


def mosaic(p) -> None:
    """Geographic lobular patches of lower attenuation (air trapping) next to slightly denser lung."""
    rng, fr = p.rng, p.frame
    lobes, loc = _pick_lobes(p, [BOTH_LUNGS, BOTH_LOWER, RIGHT_LUNG, LEFT_LUNG], [5, 2.5, 1, 1])
    field = smooth_noise(rng, fr, float(rng.uniform(9, 14)))
    lung = np.isin(p.lobes, lobes) & (p.hu < -650) & (p.mask == 0)     # parenchyma, not vessels or lesions
    dark = lung & (field > rng.uniform(0.2, 0.5))
    if not dark.any():
        return
    idx = np.argwhere(dark)
    center = [fr.u[int(np.median(idx[:, 0]))], fr.v[int(np.median(idx[:, 1]))], fr.w[int(np.median(idx[:, 2]))]]
    rec = p._commit((slice(None),) * 3, dark, "Mosaic attenuation pattern", loc, center, float(2 * fr.spacing[0]),
                    lobe=lobes[0])
    if rec:
        p.hu[dark] -= float(rng.uniform(45, 70))
        p.hu[lung & ~dark & (field < -0.3)] += float(rng.uniform(15, 30))
