"""Controls for grounding: what a text-only location prior and the position embeddings alone achieve.

Location prior (no image content). The sentence's location words (side, lobe, zone, organ) name a region
of the volume's *anatomy map* (`<run>/preprocessed/masks/<id>.organ.nii.gz`, the synthetic corpus' organ
labels, cropped exactly like the image); the prior's top-K are the K patches with the largest share of
region voxels, ties broken by a seeded RNG. No image intensity is read. Words → region:

    side        right / left (lung of that side); both / bilateral / neither named → both lungs
    zone        upper, apical, apex → upper half of that lung's z extent (RAS: +z superior);
                lower, basal, base, costophrenic → lower half; middle, lingula/lingular → middle third
    front/back  anterior → front half of the lung's y extent (RAS: +y anterior); posterior, dependent → back half
    organ       sternum/sternal/sternotomy → the front-most, medial bone; hiatal/hiatus/esophag… → the lowest
                third of the aorta (the oesophageal hiatus lies beside the descending aorta at the diaphragm);
                heart, cardiac, pericardial, coronary, LAD, atrium, vena cava … → heart; mediastinal, lymph node,
                paratracheal, subcarinal, hilar, prevascular, aortopulmonary → airway ∪ aorta; aorta/aortic →
                aorta (arch → its upper third); lung, lobe, pleural, hemithorax … → lungs (with side and zone)

(first match in that order: "sternotomy … after cardiac surgery" is the sternum; "left anterior descending"
is the heart, not the left lung). Fallbacks, counted: a sentence without any location word gets both lungs
(`no_location_word`); a region with no voxel on the crop (or no anatomy map) gets K random patches
(`random`).

Content-shuffled. The trained model's top-K for each sentence of volume A computed over the patch
features of a volume B of another patient (a seeded derangement of the patients), scored against A's
lesion patches. Every volume's features sit on the same positional grid, so positions are kept and
contents swapped: what the position embeddings (and the average anatomy at each position) alone give.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from simcrop_kernels import topk_similarity

# the synthetic corpus' organ labels (simcrop.data.synthetic.phantom.ORGAN_LABELS)
ORGAN_LABELS = {"right_lung": 1, "left_lung": 2, "airway": 3, "heart": 4, "aorta": 5, "bone": 6}

_ORGAN_WORDS = [  # (organ, word stems), first match wins
    ("sternum", ("sternum", "sternal", "sternotomy")),
    ("hiatus", ("hiatal", "hiatus", "esophag", "gastroesophageal")),
    ("heart", ("heart", "cardiac", "cardiomegaly", "cardiothoracic", "pericardi", "coronary", "lad",
               "circumflex", "atrium", "atrial", "cavoatrial", "ventricle", "ventricular", "vena")),
    ("mediastinum", ("mediastin", "lymph", "paratracheal", "subcarinal", "hilar", "hilum", "prevascular",
                     "aortopulmonary")),
    ("aorta", ("aorta", "aortic")),
    ("lung", ("lung", "lobe", "lobar", "pulmonary", "parenchym", "pleur", "hemithorax", "lingul", "bronch",
              "emphysem", "fissur")),
]
_ZONE_WORDS = {"upper": ("upper", "apical", "apex", "apicoposterior"),
               "lower": ("lower", "basal", "base", "bases", "costophrenic"),
               "middle": ("middle", "lingula", "lingular")}


@dataclass(frozen=True)
class Location:
    """What a sentence's words say about where: organ, lung sides, zones, anterior/posterior."""
    organ: str | None = None
    sides: tuple[str, ...] = ()
    zones: tuple[str, ...] = ()
    ap: str | None = None
    words: tuple[str, ...] = field(default=(), compare=False)

    @property
    def found(self) -> bool:
        return bool(self.organ or self.sides or self.zones)


def _has(tokens: list[str], stems: Sequence[str]) -> list[str]:
    return [t for t in tokens if any(t == s or (len(s) > 3 and t.startswith(s)) for s in stems)]


def parse_location(text: str) -> Location:
    """The location words of a report sentence (see the module docstring for the vocabulary)."""
    text = re.sub(r"left (anterior descending|main)\b", "coronary", text.lower())    # coronary names, not sides
    tokens = re.findall(r"[a-z]+", text)
    words: list[str] = []
    organ = None
    for name, stems in _ORGAN_WORDS:
        hit = _has(tokens, stems)
        if hit:
            organ, words = name, words + hit
            break
    sides = tuple(s for s in ("left", "right") if s in tokens)
    if "both" in tokens or "bilateral" in tokens or "bilaterally" in tokens:
        sides = ("left", "right")
    zones = []
    for zone, stems in _ZONE_WORDS.items():
        hit = [t for t in tokens if t in stems]
        if hit:
            zones.append(zone)
            words += hit
    if "middle" in zones and ("lingula" in tokens or "lingular" in tokens):
        zones, sides = ["middle"], ("left",)                # the lingula: left lung, level of the middle lobe
    ap = "anterior" if "anterior" in tokens else "posterior" if {"posterior", "dependent", "dependently"} & set(
        tokens) else None
    if organ is None and (sides or zones):
        organ = "lung"                                       # "in the right upper lobe" has "lobe"; "left" alone
    if organ not in (None, "lung"):                          # sides and zones describe lungs only
        sides, ap = (), None
        zones = ["upper"] if organ == "aorta" and "arch" in tokens else []
    return Location(organ, tuple(sides), tuple(zones), ap, tuple(words + list(sides)))


def _extent_cut(mask: np.ndarray, axis: int, lo_frac: float, hi_frac: float) -> np.ndarray:
    """mask restricted to [lo_frac, hi_frac) of its own extent along axis."""
    coords = np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0]
    if coords.size == 0:
        return mask
    start, length = coords[0], coords[-1] + 1 - coords[0]
    idx = np.arange(mask.shape[axis])
    keep = (idx >= start + lo_frac * length) & (idx < start + hi_frac * length)
    if hi_frac >= 1:
        keep |= idx >= start + lo_frac * length
    shape = [1, 1, 1]
    shape[axis] = -1
    return mask & keep.reshape(shape)


_ZONE_RANGE = {"upper": (0.5, 1.0), "middle": (1 / 3, 2 / 3), "lower": (0.0, 0.5)}     # of the z extent (+z up)
_AP_RANGE = {"anterior": (0.5, 1.0), "posterior": (0.0, 0.5)}                            # of the y extent (+y front)


def region_mask(organs: np.ndarray, loc: Location, labels: dict | None = None) -> np.ndarray:
    """organs (X, Y, Z) int label map (RAS) → (X, Y, Z) bool region that `loc` names (empty if none)."""
    labels = labels or ORGAN_LABELS
    organs = np.asarray(organs)
    organ = loc.organ or "lung"
    if organ == "lung":
        region = np.zeros(organs.shape, bool)
        for side in loc.sides or ("left", "right"):
            lung = organs == labels[f"{side}_lung"]
            part = np.zeros_like(lung)
            for zone in loc.zones or ():
                part |= _extent_cut(lung, 2, *_ZONE_RANGE[zone])
            part = part if loc.zones else lung
            region |= _extent_cut(part, 1, *_AP_RANGE[loc.ap]) if loc.ap else part
        return region
    if organ == "heart":
        return organs == labels["heart"]
    if organ == "aorta":
        aorta = organs == labels["aorta"]
        return _extent_cut(aorta, 2, 2 / 3, 1.0) if "upper" in loc.zones else aorta
    if organ == "hiatus":
        return _extent_cut(organs == labels["aorta"], 2, 0.0, 1 / 3)
    if organ == "mediastinum":
        return np.isin(organs, [labels["airway"], labels["aorta"]])
    if organ == "sternum":
        bone = organs == labels["bone"]
        return _extent_cut(bone, 1, 0.8, 1.0) & _extent_cut(organs > 0, 0, 0.35, 0.65)   # front, medial
    raise ValueError(f"unknown organ {organ!r}")


def patch_share(region: np.ndarray | torch.Tensor, patch_size: Sequence[int]) -> np.ndarray:
    """(X, Y, Z) bool → (N,) fraction of each patch's voxels in the region, ViT token order (h-major)."""
    region = np.asarray(region, dtype=np.float64)
    (X, Y, Z), (ph, pw, pd) = region.shape, patch_size
    if X % ph or Y % pw or Z % pd:
        raise ValueError(f"map shape {region.shape} is not a multiple of the patch size {tuple(patch_size)}")
    return region.reshape(X // ph, ph, Y // pw, pw, Z // pd, pd).mean(axis=(1, 3, 5)).reshape(-1)


def rank_patches(share: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """The k patches with the largest share, ties (and the zero-share rest) in random order, best first."""
    order = np.lexsort((rng.random(share.size), -share))
    return order[:k]


@dataclass
class PriorResult:
    indices: torch.Tensor                 # (Ns, K) int64, best first
    source: list[str]                     # per sentence: region | no_location_word | random
    locations: list[Location]

    @property
    def fallbacks(self) -> dict[str, int]:
        return {key: self.source.count(key) for key in ("region", "no_location_word", "random")}


def location_prior(texts: Sequence[str], organ_maps: Sequence[np.ndarray | None], patch_size: Sequence[int],
                   n_patches: int, k: int, seed: int = 0, labels: dict | None = None) -> PriorResult:
    """Top-K patches of each sentence from its words and its volume's anatomy map alone.

    texts[s] and organ_maps[s] (the crop's (X, Y, Z) label map of sentence s's volume, or None when there
    is none): one per sentence. Reads no image.
    """
    rng = np.random.default_rng(seed)
    rows, source, locations = [], [], []
    for text, organs in zip(texts, organ_maps):
        loc = parse_location(text)
        locations.append(loc)
        share = None
        if organs is not None:
            share = patch_share(region_mask(np.asarray(organs), loc, labels), patch_size)
            if share.size != n_patches:
                raise ValueError(f"anatomy map gives {share.size} patches, the features {n_patches}")
        if share is None or not share.any():
            source.append("random")
            rows.append(rng.permutation(n_patches)[:k])
        else:
            source.append("region" if loc.found else "no_location_word")
            rows.append(rank_patches(share, k, rng))
    indices = torch.as_tensor(np.stack(rows) if rows else np.zeros((0, k)), dtype=torch.int64)
    return PriorResult(indices, source, locations)


def donor_volumes(groups: Sequence, seed: int = 0) -> np.ndarray:
    """For each volume, a volume of another patient: a seeded derangement of the patients (no patient gets
    itself), each volume of patient p taking a random volume of patient σ(p). groups: patient per volume.
    Raises ValueError with fewer than two patients."""
    groups = np.asarray(groups)
    patients, codes = np.unique(groups, return_inverse=True)
    p = patients.size
    if p < 2:
        raise ValueError("content shuffling needs volumes of at least two patients")
    rng = np.random.default_rng(seed)
    while True:
        sigma = rng.permutation(p)
        if not np.any(sigma == np.arange(p)):
            break
    members = [np.flatnonzero(codes == q) for q in range(p)]
    return np.array([rng.choice(members[sigma[c]]) for c in codes], dtype=np.int64)


def content_shuffled_topk(sentences: torch.Tensor, patches: torch.Tensor, k: int, sentence_to_volume: torch.Tensor,
                          donors: np.ndarray | torch.Tensor, device: str = "cpu") -> torch.Tensor:
    """(Ns, K) top-K of each sentence over its volume's donor's patch features (same positional grid)."""
    donors = torch.as_tensor(np.asarray(donors), dtype=torch.int64)
    s2v = donors[sentence_to_volume.cpu().long()]
    res = topk_similarity(sentences.to(device), patches.to(device), k, mode="own",
                          sentence_to_volume=s2v.to(device), return_pooled=False)
    return res.indices.cpu()
