"""Thorax (or, for the no-chest cases, abdomen) phantom in HU with per-case anatomical variation.

`draw_anatomy` samples the case; `build_phantom` rasterises it into tissue classes and HU on the
canonical RAS grid. Geometry is in local mm (see shapes.Frame): u right +, v anterior +, w below apex +.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .shapes import Frame, paint_tube, smooth_noise, superellipse_radius

# Output organ map values (uint8), the segmentation ground truth of the corpus.
ORGAN_LABELS: dict[str, int] = {"right_lung": 1, "left_lung": 2, "airway": 3, "heart": 4, "aorta": 5, "bone": 6}

# Internal tissue classes; each maps to a per-case HU mean (see `_hu_table`).
AIR, FAT, MUSCLE, LUNG, AIRWAY, WALL, HEART, AORTA, CORTEX, MARROW, DISC, LIVER, TABLE, CORD, \
    PA, SOFT, GAS, KIDNEY, STOMACH, CARTILAGE = range(20)
LOBES = {1: "right upper lobe", 2: "right middle lobe", 3: "right lower lobe",
         4: "left upper lobe", 5: "left lower lobe"}


@dataclass
class Anatomy:
    """One patient's body plan. Lengths in mm, HU values in Hounsfield units."""
    kind: str = "chest"                    # chest | abdomen (the no-chest cases)
    A0: float = 155.0                      # body half-width
    B0: float = 110.0                      # body half-depth
    fat: float = 15.0                      # subcutaneous fat thickness
    muscle: float = 14.0                   # chest-wall muscle thickness
    H: float = 250.0                       # apex → posterior costophrenic recess
    dome: float = 55.0                     # diaphragm dome height
    right_dome_up: float = 15.0            # the right dome sits higher (liver)
    heart_axes: tuple = (56.0, 44.0, 52.0)
    heart_rot: float = 32.0                # long axis rotated to the left-anterior
    heart_scale: float = 1.0               # > 1.18: cardiomegaly
    aorta_r: float = 14.0
    trachea_r: float = 9.0
    carina_w: float = 80.0
    vb_r: float = 19.0                     # vertebral body radius
    vert_period: float = 27.0
    vert_phase: float = 0.0
    rib_period: float = 25.0
    rib_descent: float = 24.0              # mm lower per radian towards the sternum
    table: bool = True
    table_gap: float = 12.0
    hu: dict = field(default_factory=dict)


def draw_anatomy(rng: np.random.Generator, below_apex_mm: float, kind: str = "chest") -> Anatomy:
    """Sample a body plan; `below_apex_mm` (scan coverage under the apex) sets the lung height so that
    every scan ends 30–75 mm under the costophrenic recesses, as a chest protocol does."""
    size = rng.uniform(0.92, 1.06)   # one body-size factor keeps proportions plausible
    a = Anatomy(
        kind=kind, A0=168 * size * rng.uniform(0.95, 1.05), B0=116 * size * rng.uniform(0.92, 1.08),
        fat=rng.uniform(8, 28), muscle=rng.uniform(8, 13), H=float(np.clip(below_apex_mm - rng.uniform(30, 75), 190, 290)),
        dome=rng.uniform(45, 68), right_dome_up=rng.uniform(8, 20),
        heart_axes=tuple(np.array([56, 44, 52]) * size * rng.uniform(0.92, 1.08, 3)),
        heart_rot=rng.uniform(22, 40), aorta_r=rng.uniform(12, 16), trachea_r=rng.uniform(7.5, 10),
        carina_w=rng.uniform(70, 92), vb_r=rng.uniform(16, 21), vert_period=rng.uniform(25, 29),
        vert_phase=rng.uniform(0, 29), rib_period=rng.uniform(23, 27), rib_descent=rng.uniform(18, 28),
        table=bool(rng.random() < 0.85), table_gap=rng.uniform(6, 20),
    )
    a.hu = {
        AIR: -1000.0, FAT: rng.uniform(-116, -98), MUSCLE: rng.uniform(40, 55), LUNG: rng.uniform(-875, -835),
        AIRWAY: -990.0, WALL: rng.uniform(20, 60), HEART: rng.uniform(35, 45), AORTA: rng.uniform(35, 48),
        CORTEX: rng.uniform(650, 950), MARROW: rng.uniform(140, 280), DISC: rng.uniform(70, 100),
        LIVER: rng.uniform(48, 66), TABLE: rng.uniform(120, 260), CORD: rng.uniform(15, 30),
        PA: rng.uniform(35, 45), SOFT: rng.uniform(20, 40), GAS: -990.0, KIDNEY: rng.uniform(28, 38),
        STOMACH: rng.uniform(15, 30), CARTILAGE: rng.uniform(90, 160),
    }
    return a


class Body:
    """Derived landmarks of an Anatomy (local mm), shared by the phantom and the lesion planters."""

    def __init__(self, a: Anatomy):
        self.a = a
        inner = a.fat + a.muscle
        self.Ai, self.Bi = a.A0 - inner, a.B0 - inner - 4
        self.vc = 6.0                                  # cage sits anterior: thick paraspinal muscles
        self.v_vb = self.vc - self.Bi + a.vb_r * 0.9   # vertebral body bulges into the thorax
        self.v_t = self.v_vb + a.vb_r + 24 + a.trachea_r
        ah, bh, ch = (np.array(a.heart_axes) * [a.heart_scale, a.heart_scale, 1.0 + 0.5 * (a.heart_scale - 1)])
        self.heart_axes = (ah, bh, ch)
        self.heart_c = np.array([-0.16 * self.Ai, self.vc + 0.42 * self.Bi - 0.55 * bh + 18,
                                 a.H - a.dome - 0.6 * ch])
        self.w_arch = a.carina_w - 28
        self.hilum = {+1: np.array([0.32 * self.Ai, self.v_t - 8, a.carina_w + 30]),
                      -1: np.array([-0.34 * self.Ai, self.v_t - 8, a.carina_w + 35])}

    def cage(self, w):
        """Half-axes of the thoracic cage at depth w: narrower at the apex. w: (…) mm."""
        s = np.clip((w + 40) / 130.0, 0, 1)
        s = s * s * (3 - 2 * s)
        return self.Ai * (0.88 + 0.12 * s), self.Bi * (0.92 + 0.08 * s)

    def diaphragm(self, u, v):
        """Depth w of the diaphragm surface under (u, v): a dome per side, higher on the right."""
        a = self.a
        side = np.where(u > 0, 1.0, -1.0)
        r2 = ((u - side * 0.45 * self.Ai) / (0.8 * self.Ai)) ** 2 + ((v - 0.1 * self.Bi) / self.Bi) ** 2
        return a.H - a.dome * np.clip(1 - r2, 0, 1) - np.where(u > 0, a.right_dome_up, 0.0)

    def heart_d(self, u, v, w, pad: float = 0.0):
        """Normalised ellipsoid radius of the heart (1 on its surface), grown by `pad` mm."""
        ah, bh, ch = self.heart_axes
        du, dv, dw = u - self.heart_c[0], v - self.heart_c[1], w - self.heart_c[2]
        c, s = np.cos(np.deg2rad(self.a.heart_rot)), np.sin(np.deg2rad(self.a.heart_rot))
        a1, a2 = du * c - dv * s, du * s + dv * c
        return np.sqrt((a1 / (ah + pad)) ** 2 + (a2 / (bh + pad)) ** 2 + (dw / (ch + pad)) ** 2)

    def aorta_path(self, w_bottom: float):
        hc, (ah, bh, ch) = self.heart_c, self.heart_axes
        pts = [(hc[0] + 0.35 * ah, hc[1] + 0.25 * bh, hc[2] - 0.3 * ch),
               (22, self.v_t + 38, self.w_arch + 35), (14, self.v_t + 30, self.w_arch + 6),
               (-6, self.v_t + 12, self.w_arch), (-24, self.v_vb + 16, self.w_arch + 10),
               (-(self.a.vb_r + 10), self.v_vb + 10, self.w_arch + 45),
               (-(self.a.vb_r + 6), self.v_vb + 10, max(w_bottom + 30, self.w_arch + 80))]
        return np.array(pts, float)

    def airway_tree(self, w_top: float):
        """[(points (N,3), radius mm)] for trachea, main and lobar bronchi."""
        t, vt, wc, Ai = self.a.trachea_r, self.v_t, self.a.carina_w, self.Ai
        return [
            (np.array([(0, vt + 4, min(w_top, -30)), (0, vt, wc * 0.5), (0, vt - 3, wc)]), t),
            (np.array([(0, vt - 3, wc), (0.2 * Ai, vt - 7, wc + 14), (0.3 * Ai, vt - 9, wc + 25)]), 0.72 * t),
            (np.array([(0.3 * Ai, vt - 9, wc + 25), (0.36 * Ai, vt - 14, wc + 60), (0.38 * Ai, vt - 22, wc + 95)]), 0.5 * t),
            (np.array([(0.26 * Ai, vt - 8, wc + 20), (0.4 * Ai, vt - 6, wc + 8), (0.52 * Ai, vt - 4, wc - 15)]), 0.45 * t),
            (np.array([(0.34 * Ai, vt - 12, wc + 45), (0.45 * Ai, vt + 15, wc + 60)]), 0.4 * t),
            (np.array([(0, vt - 3, wc), (-0.2 * Ai, vt - 6, wc + 22), (-0.33 * Ai, vt - 9, wc + 40)]), 0.65 * t),
            (np.array([(-0.33 * Ai, vt - 9, wc + 40), (-0.45 * Ai, vt + 6, wc + 32), (-0.55 * Ai, vt + 12, wc + 10)]), 0.45 * t),
            (np.array([(-0.33 * Ai, vt - 9, wc + 40), (-0.4 * Ai, vt - 18, wc + 80), (-0.42 * Ai, vt - 26, wc + 110)]), 0.48 * t),
        ]

    def lobe(self, u, v, w):
        """Lobe code (LOBES) of lung points: oblique fissure rises posteriorly; right horizontal fissure."""
        oblique = self.a.carina_w + 40 - 0.9 * (v - self.v_t)       # w of the oblique fissure at v
        lower = w > oblique
        right = u > 0
        middle = right & ~lower & (w > self.a.carina_w + 35)
        code = np.where(right, np.where(lower, 3, np.where(middle, 2, 1)), np.where(lower, 5, 4))
        return code.astype(np.uint8)


def build_phantom(a: Anatomy, frame: Frame, rng: np.random.Generator) -> dict:
    """Rasterise the anatomy.

    Returns {"tissue": (X,Y,Z) uint8 classes, "hu": (X,Y,Z) float32 HU (noise-free),
    "organs": (X,Y,Z) uint8 ORGAN_LABELS, "lobes": (X,Y,Z) uint8 LOBES code on lung voxels, "body": Body}.
    """
    b = Body(a)
    tissue = np.zeros(frame.shape, np.uint8)
    abd_noise = smooth_noise(rng, frame, 14.0)
    for z0 in range(0, frame.shape[2], 32):         # slabs bound the memory of the 512² preset
        zs = slice(z0, min(z0 + 32, frame.shape[2]))
        tissue[:, :, zs] = _slab(b, frame.u[:, None, None], frame.v[None, :, None],
                                 frame.w[None, None, zs], abd_noise[:, :, zs])
    del abd_noise
    w_top, w_bottom = float(frame.w.min()), float(frame.w.max())

    soft = lambda t: (t != CORTEX) & (t != MARROW) & (t != AIR) & (t != TABLE)  # noqa: E731
    paint_tube(tissue, frame, b.aorta_path(w_bottom), a.aorta_r + 1.5, WALL, where=soft)
    paint_tube(tissue, frame, b.aorta_path(w_bottom), a.aorta_r, AORTA, where=soft)
    hc, (ah, bh, ch) = b.heart_c, b.heart_axes
    trunk = (hc[0] - 0.1 * ah, hc[1] + 0.5 * bh, hc[2] - 0.5 * ch)
    split = (-12, b.v_t + 16, a.carina_w + 6)
    paint_tube(tissue, frame, [trunk, split], 12.0, PA, where=soft)
    for side in (+1, -1):
        paint_tube(tissue, frame, [split, b.hilum[side]], 9.0, PA, where=soft)
    for points, r in b.airway_tree(w_top):
        paint_tube(tissue, frame, points, r + 1.8, WALL, where=lambda t: t != AIRWAY)
    for points, r in b.airway_tree(w_top):
        paint_tube(tissue, frame, points, r, AIRWAY)

    hu = _hu(a, b, frame, tissue, rng)
    lung = tissue == LUNG
    organs = np.zeros(frame.shape, np.uint8)
    right = (frame.u > 0)[:, None, None]
    organs[lung & right] = ORGAN_LABELS["right_lung"]
    organs[lung & ~right] = ORGAN_LABELS["left_lung"]
    organs[tissue == AIRWAY] = ORGAN_LABELS["airway"]
    organs[tissue == HEART] = ORGAN_LABELS["heart"]
    organs[tissue == AORTA] = ORGAN_LABELS["aorta"]
    organs[(tissue == CORTEX) | (tissue == MARROW)] = ORGAN_LABELS["bone"]
    lobes = np.zeros(frame.shape, np.uint8)
    idx = np.nonzero(lung)
    lobes[idx] = b.lobe(frame.u[idx[0]], frame.v[idx[1]], frame.w[idx[2]])
    return {"tissue": tissue, "hu": hu, "organs": organs, "lobes": lobes, "body": b}


def _slab(b: Body, u, v, w, noise) -> np.ndarray:
    """Tissue classes of one z-slab from the analytic body plan. u (X,1,1), v (1,Y,1), w (1,1,z)."""
    a = b.a
    # the heart only touches a box of the slab: evaluate its ellipsoid there (the costliest shape)
    reach = max(b.heart_axes) + 8
    hx = _span(np.abs(u.ravel() - b.heart_c[0]) < reach)
    hy = _span(np.abs(v.ravel() - b.heart_c[1]) < reach)
    hbox = (hx, hy, slice(None))
    hu_, hv_, hw_ = np.broadcast_arrays(u[hx], v[:, hy], w)
    heart = {pad: b.heart_d(hu_, hv_, hw_, pad=pad) <= 1 for pad in (0, 3, 6)}
    u, v, w = np.broadcast_arrays(u, v, w)    # every mask below is then full-slab shaped
    t = np.zeros(u.shape, np.uint8)
    Ac, Bc = b.cage(w)
    scale_a, scale_b = Ac / b.Ai, Bc / b.Bi
    A, B = a.A0 * scale_a, a.B0 * scale_b
    t[superellipse_radius(u, v, A, B) <= 1] = FAT
    t[superellipse_radius(u, v - 3, A - a.fat, B - a.fat) <= 1] = MUSCLE
    rho = superellipse_radius(u, v - b.vc, Ac, Bc, p=2.1)
    inside = rho <= 1.0
    dia = b.diaphragm(u, v)
    thorax = inside & (w < dia)
    abdomen = inside & (w >= dia)
    t[thorax] = FAT                                                     # mediastinal fat by default
    t[abdomen & (noise < 0.3)] = SOFT
    t[abdomen & (noise < -1.6)] = GAS
    t[abdomen & (u > -0.25 * b.Ai) & (w < a.H + 150) & (w < dia + 170 - 0.3 * u)] = LIVER
    sm = ((u + 0.45 * b.Ai) / 45) ** 2 + ((v - 0.15 * b.Bi) / 38) ** 2 + ((w - (a.H - a.dome + 45)) / 50) ** 2
    t[abdomen & (sm <= 1)] = STOMACH
    t[abdomen & (sm <= 1) & (w < a.H - a.dome + 12)] = GAS
    kd = ((np.abs(u) - 0.36 * b.Ai) / 28) ** 2 + ((v - b.v_vb - 5) / 30) ** 2 + ((w - a.H - 95) / 55) ** 2
    t[abdomen & (kd <= 1)] = KIDNEY
    # lungs: inside the cage, lateral to the mediastinum, under the apex dome, above the diaphragm
    side = np.where(u > 0, 1.0, -1.0)
    apex = ((u - side * 0.5 * Ac) / (0.5 * Ac)) ** 2 + ((v + 0.15 * Bc) / (0.75 * Bc)) ** 2
    med = 16 + 10 * np.clip((w - 30) / 80, 0, 1)
    spine = (u ** 2 + (v - b.v_vb) ** 2) <= (a.vb_r + 9) ** 2
    lung = (rho <= 0.985) & (w < dia - 2) & (np.abs(u) > med) & (apex <= 2.2 * np.clip(w / 55.0, 0, 1)) \
        & ~spine
    lung[hbox] &= ~heart[6]
    if a.kind == "chest":
        t[lung] = LUNG
    th = t[hbox]                                  # a view: writes land in t
    th[heart[3] & (w[hbox] < dia[hbox] + 5)] = FAT                   # pericardial fat shell
    th[heart[0] & inside[hbox]] = HEART
    _spine(b, t, u, v, w)
    _ribs(b, t, u, v, w, Ac, Bc)
    if a.table:
        v_back = -B + 3
        band = (v - (v_back - a.table_gap + 0.0009 * u ** 2))
        t[(band < 0) & (band > -7) & (np.abs(u) < 230) & (t == AIR)] = TABLE
    return t


def _span(flags: np.ndarray) -> slice:
    idx = np.flatnonzero(flags)
    return slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else slice(0, 0)


def _spine(b: Body, t, u, v, w) -> None:
    a = b.a
    r2 = u ** 2 + ((v - b.v_vb) / 0.88) ** 2
    phase = np.mod(w - a.vert_phase, a.vert_period)
    disc = phase < 5.0
    body = r2 <= a.vb_r ** 2
    t[body] = CORTEX
    t[body & (r2 <= (a.vb_r - 2.2) ** 2)] = MARROW
    t[body & disc & (r2 <= (a.vb_r - 0.5) ** 2)] = DISC
    v_canal = b.v_vb - a.vb_r - 9
    rc2 = u ** 2 + (v - v_canal) ** 2
    arch = (rc2 <= 15.5 ** 2) & (v < b.v_vb - a.vb_r + 1) & (phase > 6) & (phase < a.vert_period - 4)
    t[arch] = CORTEX
    t[arch & (rc2 <= 13 ** 2)] = MARROW
    spinous = (np.abs(u) < 4.5) & (v < v_canal - 10) & (v > v_canal - 42) & (phase > 9) & (phase < 21)
    t[spinous & (t != AIR)] = CORTEX
    transverse = (np.abs(u) > 10) & (np.abs(u) < 34) & (np.abs(v - v_canal - 2) < 5) & (phase > 8) & (phase < 17)
    t[transverse] = MARROW
    t[rc2 <= 8.5 ** 2] = CORD


def _ribs(b: Body, t, u, v, w, Ac, Bc) -> None:
    """Ribs as a helix on the cage wall: rib n sits at w = w1 + n·P + k·|θ| (θ = 0 at the spine)."""
    a = b.a
    theta = np.abs(np.arctan2(u, -(v - b.vc)))
    rho = superellipse_radius(u, v - b.vc, Ac, Bc, p=2.1)
    r_mean = 0.5 * (Ac + Bc)
    depth = (rho - 1.0) * r_mean                 # mm outside the cage wall
    band = (depth >= 0.5) & (depth <= 9.0)
    phase = w + 20 - a.rib_descent * theta
    n = np.floor(phase / a.rib_period + 0.5)
    off = np.abs(phase - n * a.rib_period)
    rib = band & (n >= 0) & (n < 12) & (off < 5.5) & (theta > 0.28)
    bony = rib & (theta < 2.35 - 0.06 * n)
    t[rib & ~bony & (theta < 2.75)] = CARTILAGE
    t[bony] = CORTEX
    t[bony & (off < 3.2) & (depth > 2.4) & (depth < 7.1)] = MARROW
    sternum = (np.abs(u) < 13 + 10 * (w < 40)) & (depth > -3) & (depth < 11) & (theta > 2.6) & (w > 5) & (w < 190)
    t[sternum] = MARROW
    t[sternum & ((depth < -1) | (depth > 9))] = CORTEX
    scap = (theta > 0.5) & (theta < 1.15) & (depth > 15) & (depth < 20) & (w > -40) & (w < 100)
    t[scap] = CORTEX


def _hu(a: Anatomy, b: Body, frame: Frame, tissue: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise-free HU: per-class means, soft-tissue texture, lung parenchyma with vessels."""
    table = np.zeros(256, np.float32)
    for cls, value in a.hu.items():
        table[cls] = value
    hu = table[tissue]
    texture = smooth_noise(rng, frame, 3.0)
    hu += np.where(tissue == AIR, 0, 8.0) * texture
    lung = tissue == LUNG
    n1, n2 = smooth_noise(rng, frame, 11.0), smooth_noise(rng, frame, 11.0)
    idx = np.nonzero(lung)
    u, v, w = frame.u[idx[0]], frame.v[idx[1]], frame.w[idx[2]]
    hil = np.minimum(*(np.linalg.norm(np.column_stack([u, v, w]) - b.hilum[s], axis=1) for s in (1, -1)))
    thick = 0.22 + 0.3 * np.exp(-(hil / 70.0) ** 2)               # vessels taper towards the periphery
    prof = np.clip(1 - np.sqrt(n1[idx] ** 2 + n2[idx] ** 2) / thick, 0, 1)
    dependent = np.clip(-(v - b.vc) / b.Bi, -1, 1)              # gravity: posterior lung is denser
    base = a.hu[LUNG] + 22 * dependent + 18 * texture[idx]
    hu[idx] = base + (a.hu[PA] - base) * np.sqrt(prof)
    return hu
