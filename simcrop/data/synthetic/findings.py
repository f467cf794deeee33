"""Findings: which CT-RATE labels a scan has, and planting them into HU with a lesion id each.

`draw_findings` picks labels (≈35 % of scans normal); `plant` rasterises them. Every planted lesion
gets a record {id, label, location, center (local mm), size_mm, attrs} used by the report writer;
lesion voxels never overwrite an earlier lesion, so every id keeps its own voxels.
"""
from __future__ import annotations

import numpy as np

from . import findings_airways as A
from . import phantom as P
from .shapes import Frame, ellipsoid, smooth_noise, tube

# Labels we plant, with a prevalence weight (roughly CT-RATE's order of frequency).
PLANTABLE = {
    "Lung nodule": 0.45, "Arterial wall calcification": 0.3, "Coronary artery wall calcification": 0.25,
    "Lung opacity": 0.25, "Atelectasis": 0.2, "Pulmonary fibrotic sequela": 0.2, "Lymphadenopathy": 0.2,
    "Emphysema": 0.18, "Pleural effusion": 0.12, "Consolidation": 0.12, "Cardiomegaly": 0.1,
    "Hiatal hernia": 0.1, "Medical material": 0.1, "Pericardial effusion": 0.07, "Bronchiectasis": 0.1,
    "Peribronchial thickening": 0.1, "Mosaic attenuation pattern": 0.07, "Interlobular septal thickening": 0.07,
}
NORMAL_FRACTION = 0.35


def draw_findings(rng: np.random.Generator) -> list[str]:
    """Labels of one scan (empty for a normal scan)."""
    if rng.random() < NORMAL_FRACTION:
        return []
    k = int(rng.choice([1, 2, 3, 4, 5], p=[0.35, 0.3, 0.2, 0.1, 0.05]))
    names = list(PLANTABLE)
    weights = np.array([PLANTABLE[n] for n in names])
    return [str(x) for x in rng.choice(names, size=k, replace=False, p=weights / weights.sum())]


class Planter:
    """Writes lesions into `hu` (float32 HU) and `mask` (int16 ids), both (X, Y, Z) canonical RAS."""

    def __init__(self, ph: dict, frame: Frame, rng: np.random.Generator):
        self.ph, self.frame, self.rng = ph, frame, rng
        self.hu, self.tissue, self.organs, self.lobes = ph["hu"], ph["tissue"], ph["organs"], ph["lobes"]
        self.body: P.Body = ph["body"]
        self.mask = np.zeros(frame.shape, np.int16)
        self.records: list[dict] = []
        self._lobe_voxels: dict[int, np.ndarray] = {}
        self._lobe_extent: dict[int, list] = {}

    # -- bookkeeping ------------------------------------------------------------------------------
    def _commit(self, box, region, label, location, center, size_mm, hu=None, blend=None, **attrs):
        """Claim free voxels of `region` (bool on `box`) for a new lesion id and write its HU."""
        region = region & (self.mask[box] == 0)
        if not region.any():
            return None
        lid = len(self.records) + 1
        self.mask[box][region] = lid
        if hu is not None:
            sub = self.hu[box]
            value = hu if np.isscalar(hu) else hu[region]
            if blend == "max":
                sub[region] = np.maximum(sub[region], value)
            else:
                sub[region] = value
        rec = {"id": lid, "label": label, "location": location, "center": [float(c) for c in center],
               "size_mm": round(float(size_mm), 1), "attrs": attrs}
        self.records.append(rec)
        return rec

    def _texture(self, shape, amp):
        return amp * self.rng.standard_normal(shape).astype(np.float32)

    def _lung_point(self, lobe: int, margin_mm: float) -> np.ndarray | None:
        """Random point of a lobe with lung at ±margin along each axis (so the lesion sits in lung)."""
        fr = self.frame
        cand = self._voxels_of(lobe)
        if cand.size == 0:
            return None
        for _ in range(60):
            i, j, k = np.unravel_index(cand[self.rng.integers(cand.size)], fr.shape)
            c = np.array([fr.u[i], fr.v[j], fr.w[k]])
            probes = [c + d * margin_mm for d in np.vstack([np.eye(3), -np.eye(3)])]
            if all(self.tissue[tuple(fr.to_index(p))] == P.LUNG for p in probes):
                return c
        return c

    def _voxels_of(self, lobe: int) -> np.ndarray:
        if lobe not in self._lobe_voxels:
            self._lobe_voxels[lobe] = np.flatnonzero(self.lobes == lobe)
        return self._lobe_voxels[lobe]

    def segment(self, lobe: int, c) -> str:
        """Bronchopulmonary segment name of a point of a lobe, from its position inside the lobe."""
        if lobe not in self._lobe_extent:
            cand = self._voxels_of(lobe)
            i, j, k = np.unravel_index(cand[:: max(1, cand.size // 20000)], self.frame.shape)
            fr = self.frame
            self._lobe_extent[lobe] = [np.percentile(a, [5, 95]) if a.size else np.array([0.0, 1.0])
                                       for a in (np.abs(fr.u[i]), fr.v[j], fr.w[k])]
        fu, fv, fw = ((x - lo) / max(hi - lo, 1e-3) for x, (lo, hi) in
                      zip((abs(c[0]), c[1], c[2]), self._lobe_extent[lobe]))
        return _segment_name(lobe, fu, fv, fw)

    # -- planters ---------------------------------------------------------------------------------
    def nodule(self):
        n = int(self.rng.choice([1, 1, 1, 2, 3]))
        for _ in range(n):
            lobe = int(self.rng.integers(1, 6))
            size = float(np.round(np.clip(self.rng.lognormal(np.log(8), 0.55), 4, 30)))
            c = self._lung_point(lobe, size / 2 + 3)
            if c is None:
                continue
            kind = self.rng.choice(["solid", "solid", "part-solid", "calcified"])
            box, m = ellipsoid(self.frame, c, [size / 2] * 3, lumpy=0.15, rng=self.rng)
            _keep_center(m, box, self.frame, c)
            hu = {"solid": 35.0, "part-solid": -250.0, "calcified": 450.0}[kind]
            self._commit(box, m, "Lung nodule", P.LOBES[lobe], c, size, hu=hu + self._texture(m.shape, 12),
                         kind=kind, lobe=lobe, segment=self.segment(lobe, c))

    def _patch(self, label, lobes, size_range, hu, blend, lumpy=0.4, **attrs):
        lobe = int(self.rng.choice(lobes))
        size = float(np.round(self.rng.uniform(*size_range)))
        c = self._lung_point(lobe, 6)
        if c is None:
            return
        radii = size / 2 * self.rng.uniform(0.7, 1.2, 3)
        box, m = ellipsoid(self.frame, c, radii, lumpy=lumpy, rng=self.rng)
        side = self.lobes[box] > 0
        same_side = (self.lobes[box] <= 3) if lobe <= 3 else (self.lobes[box] >= 4)
        self._commit(box, m & side & same_side, label, P.LOBES[lobe], c, size,
                     hu=hu + self._texture(m.shape, 20), blend=blend, lobe=lobe, segment=self.segment(lobe, c),
                     **attrs)

    def opacity(self):
        self._patch("Lung opacity", [1, 2, 3, 4, 5], (15, 55), -560.0, "max", pattern="ground-glass")

    def consolidation(self):
        self._patch("Consolidation", [3, 5, 3, 5, 1, 2, 4], (25, 70), 30.0, None)

    def fibrosis(self):
        lobe = int(self.rng.integers(1, 6))
        c = self._lung_point(lobe, 8)
        if c is None:
            return
        pts = [c]
        for _ in range(int(self.rng.integers(2, 4))):
            pts.append(pts[-1] + self.rng.normal(0, 1, 3) / 1.7 * 18)
        length = sum(np.linalg.norm(np.diff(pts, axis=0), axis=1))
        lung = self.lobes > 0
        for box, m in tube(self.frame, pts, 1.6, min_radius_vox=0.55):
            m &= lung[box]
            if self.records and self.records[-1]["label"] == "Pulmonary fibrotic sequela" and \
                    self.records[-1]["attrs"].get("lobe") == lobe:
                rec = self.records[-1]
                m &= self.mask[box] == 0
                self.mask[box][m] = rec["id"]
                self.hu[box][m] = -60.0
            else:
                self._commit(box, m, "Pulmonary fibrotic sequela", P.LOBES[lobe], c, length, hu=-60.0,
                             lobe=lobe, pattern="linear", segment=self.segment(lobe, c))

    def atelectasis(self):
        lobe = int(self.rng.choice([3, 5, 3, 5, 2]))
        c = self._lung_point(lobe, 5)
        if c is None:
            return
        size = float(np.round(self.rng.uniform(20, 50)))
        box, m = ellipsoid(self.frame, c, [size / 2, 4.5, size / 4], rot_deg=self.rng.uniform(-30, 30),
                           lumpy=0.2, rng=self.rng)
        self._commit(box, m & (self.lobes[box] == lobe), "Atelectasis", P.LOBES[lobe], c, size, hu=25.0,
                     lobe=lobe, pattern=str(self.rng.choice(["linear", "subsegmental", "plate-like"])),
                     segment=self.segment(lobe, c))

    def effusion(self):
        b, fr = self.body, self.frame
        sides = {0: [+1], 1: [-1], 2: [+1, -1]}[int(self.rng.integers(0, 3))]
        depth = float(self.rng.uniform(12, 55))
        for s in sides:
            code = (1, 2, 3) if s > 0 else (4, 5)
            u, v, w = fr.coords((slice(None),) * 3)
            _, Bc = b.cage(w)
            start = b.a.H * 0.4
            level = (b.vc - Bc) + depth * np.clip((w - start) / (b.a.H - start), 0, 1) ** 0.6
            region = np.isin(self.lobes, code) & (v < level)
            if not region.any():
                continue
            idx = np.argwhere(region).mean(0).round().astype(int)
            center = [fr.u[idx[0]], fr.v[idx[1]], fr.w[idx[2]]]
            box = (slice(None),) * 3
            rec = self._commit(box, region, "Pleural effusion", "right" if s > 0 else "left", center, depth,
                               hu=12.0 + self._texture(region.shape, 6), amount=_amount(depth, 20, 38),
                               bilateral=len(sides) == 2)
            if rec:
                self.organs[region & (self.mask == rec["id"])] = 0   # fluid is not lung

    def pericardial(self):
        b, fr = self.body, self.frame
        thick = float(self.rng.uniform(6, 18))
        ah, bh, ch = b.heart_axes
        reach = max(ah, bh, ch) + thick + 4
        box = fr.box(b.heart_c - reach, b.heart_c + reach)
        u, v, w = fr.coords(box)
        shell = (b.heart_d(u, v, w, pad=thick) <= 1) & (b.heart_d(u, v, w) > 1) & (self.tissue[box] != P.AORTA) \
            & (self.tissue[box] != P.PA) & (w < b.diaphragm(u, v)) & (self.tissue[box] != P.AIRWAY)
        rec = self._commit(box, shell, "Pericardial effusion", "pericardium", b.heart_c, thick, hu=15.0,
                           amount=_amount(thick, 9, 14))
        if rec:
            self.organs[box][self.mask[box] == rec["id"]] = 0

    def cardiomegaly(self):
        b = self.body
        heart = self.tissue == P.HEART
        xs = np.flatnonzero(heart.any(axis=(1, 2)))
        width = (xs.max() - xs.min() + 1) * self.frame.spacing[0] if xs.size else 2 * b.heart_axes[0]
        ratio = width / (2 * b.Ai)
        self._commit((slice(None),) * 3, heart, "Cardiomegaly", "heart", b.heart_c, width,
                     ctr=round(float(np.clip(ratio, 0.52, 0.7)), 2))

    def emphysema(self):
        fr = self.frame
        upper = self.rng.random() < 0.7
        lobes = (1, 4) if upper else (1, 2, 3, 4, 5)
        holes = smooth_noise(self.rng, fr, 5.0) > self.rng.uniform(1.0, 1.5)
        region = np.isin(self.lobes, lobes) & holes & (self.ph["hu"] < -600)
        if not region.any():
            return
        idx = np.argwhere(region).mean(0).round().astype(int)
        center = [fr.u[idx[0]], fr.v[idx[1]], fr.w[idx[2]]]
        box = (slice(None),) * 3
        self._commit(box, region, "Emphysema", "both upper lobes" if upper else "both lungs", center, 10.0,
                     hu=-975.0 + self._texture(region.shape, 10),
                     pattern=str(self.rng.choice(["centrilobular", "paraseptal", "centriacinar"])))

    def _spots(self, label, points, location, hu_range, **attrs):
        """Calcified plaques: small balls at `points` (local mm), one lesion id for all of them."""
        fr = self.frame
        region = np.zeros(fr.shape, bool)
        sizes = []
        for p in points:
            r = float(self.rng.uniform(1.2, 3.0))
            box, m = ellipsoid(fr, p, [r, r, r * 1.3])
            if m.size == 0:            # plaque outside the field of view
                continue
            _keep_center(m, box, fr, p)
            region[box] |= m
            sizes.append(2 * r)
        hu = float(self.rng.uniform(*hu_range))
        return self._commit((slice(None),) * 3, region, label, location, np.mean(points, axis=0), max(sizes, default=0.0),
                            hu=hu, blend="max", count=len(points), **attrs)

    def aortic_calcification(self):
        b, fr = self.body, self.frame
        from .shapes import densify
        path, _ = densify(b.aorta_path(float(fr.w.max())), np.ones(7), step_mm=2.0)
        lo = int(len(path) * 0.15)
        k = int(self.rng.integers(3, 10))
        picks = path[self.rng.integers(lo, len(path) - 5, size=k)]
        dirs = self.rng.normal(0, 1, (k, 3))
        dirs[:, 2] *= 0.3
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        pts = picks + dirs * b.a.aorta_r
        arch = np.mean(pts[:, 2] < b.w_arch + 25) > 0.5
        self._spots("Arterial wall calcification", pts, "aortic arch" if arch else "thoracic aorta", (500, 1000))

    def coronary_calcification(self):
        b = self.body
        ah, bh, ch = b.heart_axes
        t = np.sort(self.rng.uniform(0, 1, int(self.rng.integers(2, 7))))
        ang = np.deg2rad(b.a.heart_rot)
        # along the anterior interventricular groove: down and towards the apex (left, anterior)
        local = np.column_stack([-(0.2 + 0.6 * t) * ah * 0.9, 0.75 * bh * np.ones_like(t), (-0.5 + 0.9 * t) * ch * 0.8])
        c, s = np.cos(ang), np.sin(ang)
        du = local[:, 0] * c + local[:, 1] * s
        dv = -local[:, 0] * s + local[:, 1] * c
        pts = np.column_stack([b.heart_c[0] + du, b.heart_c[1] + dv, b.heart_c[2] + local[:, 2]])
        vessel = str(self.rng.choice(["LAD", "LAD and circumflex", "left main and LAD"]))
        self._spots("Coronary artery wall calcification", pts, vessel, (400, 900))

    def lymph_node(self):
        b = self.body
        wc, vt, tr = b.a.carina_w, b.v_t, b.a.trachea_r
        stations = {"subcarinal": (0, vt - 18, wc + 22), "right paratracheal": (tr + 12, vt + 2, wc - 22),
                    "prevascular": (-8, vt + 48, b.w_arch + 12), "right hilar": b.hilum[1] + [8, 14, 0],
                    "left hilar": b.hilum[-1] + [-6, 14, 0], "aortopulmonary window": (-18, vt + 10, b.w_arch + 22)}
        for _ in range(int(self.rng.choice([1, 1, 2]))):
            name = str(self.rng.choice(list(stations)))
            short = float(np.round(self.rng.uniform(11, 26)))
            radii = [short / 2, short / 2, short / 2 * self.rng.uniform(1.1, 1.6)]
            box, m = ellipsoid(self.frame, stations[name], radii, lumpy=0.1, rng=self.rng)
            t = self.tissue[box]
            m &= (t != P.AIRWAY) & (t != P.AORTA) & (t != P.CORTEX) & (t != P.MARROW) & (t != P.PA)
            rec = self._commit(box, m, "Lymphadenopathy", name, stations[name], short,
                               hu=40.0 + self._texture(m.shape, 8), station=name)
            if rec:     # airway or vessels may cut the node: its centre is its voxel nearest the station
                fr, start = self.frame, np.array([s.start for s in box])
                own = np.argwhere(self.mask[box] == rec["id"])
                ijk = own[np.abs(own + start - fr.to_index(stations[name])).max(1).argmin()] + start
                rec["center"] = [float(fr.u[ijk[0]]), float(fr.v[ijk[1]]), float(fr.w[ijk[2]])]

    def hernia(self):
        b = self.body
        c = np.array([-10.0, b.v_vb + b.a.vb_r + 18, b.a.H - b.a.dome + 2])
        size = float(np.round(self.rng.uniform(28, 55)))
        box, m = ellipsoid(self.frame, c, [size / 2, size / 2.6, size / 2.2], lumpy=0.15, rng=self.rng)
        t = self.tissue[box]
        m &= (t != P.AORTA) & (t != P.CORTEX) & (t != P.MARROW) & (t != P.HEART) & (t != P.CORD)
        hu = np.where(self.frame.w[box[2]][None, None, :] < c[2] - size / 5, -950.0, 25.0) * np.ones(m.shape)
        rec = self._commit(box, m, "Hiatal hernia", "esophageal hiatus", c, size, hu=hu.astype(np.float32),
                           kind=str(self.rng.choice(["sliding", "small sliding", "paraesophageal"])))
        if rec:
            self.organs[box][self.mask[box] == rec["id"]] = 0

    def material(self):
        b = self.body
        kind = str(self.rng.choice(["catheter", "sternotomy wires", "port catheter"]))
        fr = self.frame
        region = np.zeros(fr.shape, bool)
        if kind == "sternotomy wires":
            for w in np.linspace(35, 150, int(self.rng.integers(4, 7))):
                ring = [(x, b.vc + b.Bi + 6, w) for x in (-16, 0, 16)]
                for box, m in tube(fr, ring, 0.8, min_radius_vox=0.55):
                    region[box] |= m
            c, size, loc = np.array([0.0, b.vc + b.Bi + 6, 90.0]), 32.0, "sternum"
        else:
            svc = (b.Ai * 0.12, b.v_t + 30, b.a.carina_w - 10)
            ra = (b.heart_c[0] + 0.55 * b.heart_axes[0], b.heart_c[1] + 5, b.heart_c[2] - 0.3 * b.heart_axes[2])
            pts = [(0.7 * b.Ai, b.vc + 0.5 * b.Bi, -15), (0.35 * b.Ai, b.vc + 0.45 * b.Bi, 5), svc, ra]
            for box, m in tube(fr, pts, 1.1, min_radius_vox=0.55):
                region[box] |= m
            c, size, loc = np.array(ra), 1.1 * 2, "superior vena cava / right atrium"
        self._commit((slice(None),) * 3, region, "Medical material", loc, c, size, hu=2200.0, blend="max", kind=kind)


def _keep_center(m: np.ndarray, box, frame: Frame, center) -> None:
    """Mark the voxel holding `center` so a lesion smaller than a voxel never vanishes on a coarse grid."""
    idx = frame.to_index(center) - [s.start for s in box]
    m[tuple(np.clip(idx, 0, np.array(m.shape) - 1))] = True


def _segment_name(lobe: int, fu: float, fv: float, fw: float) -> str:
    """fu: lateral fraction, fv: anterior fraction, fw: inferior fraction of the point inside its lobe."""
    if lobe == 1:
        return "apical" if fw < 0.33 else "anterior" if fv > 0.5 else "posterior"
    if lobe == 2:
        return "lateral" if fu > 0.5 else "medial"
    if lobe == 4:
        return "apicoposterior" if fw < 0.3 else "inferior lingular" if fw > 0.72 else \
            "superior lingular" if fw > 0.55 else "anterior"
    if fw < 0.3:
        return "superior"
    if fv > 0.65:
        return "anterior basal" if lobe == 3 else "anteromedial basal"
    if fv < 0.3:
        return "posterior basal"
    return "lateral basal" if fu > 0.5 else ("medial basal" if lobe == 3 else "anteromedial basal")


def _amount(x, small, large) -> str:
    return "minimal" if x < small * 0.7 else "small" if x < small else "moderate" if x < large else "large"


PLANTERS = {
    "Lung nodule": Planter.nodule, "Lung opacity": Planter.opacity, "Consolidation": Planter.consolidation,
    "Pulmonary fibrotic sequela": Planter.fibrosis, "Atelectasis": Planter.atelectasis,
    "Pleural effusion": Planter.effusion, "Pericardial effusion": Planter.pericardial,
    "Cardiomegaly": Planter.cardiomegaly, "Emphysema": Planter.emphysema,
    "Arterial wall calcification": Planter.aortic_calcification,
    "Coronary artery wall calcification": Planter.coronary_calcification,
    "Lymphadenopathy": Planter.lymph_node, "Hiatal hernia": Planter.hernia, "Medical material": Planter.material,
    # after the focal findings: airway tubes, then septal lines and mosaic on the lung that is left
    "Bronchiectasis": A.bronchiectasis, "Peribronchial thickening": A.peribronchial,
    "Interlobular septal thickening": A.septal, "Mosaic attenuation pattern": A.mosaic,
}


def plant(ph: dict, frame: Frame, labels: list[str], rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """Plant `labels` (cardiomegaly must already be in the anatomy). Returns (lesion ids (X,Y,Z) int16, records).

    Diffuse findings go first (effusions, emphysema, heart) so focal ones land on what is left.
    """
    order = sorted(labels, key=lambda n: list(PLANTERS).index(n) if n not in
                   ("Pleural effusion", "Emphysema", "Cardiomegaly", "Pericardial effusion") else -1)
    planter = Planter(ph, frame, rng)
    for name in order:
        PLANTERS[name](planter)
    return planter.mask, planter.records
