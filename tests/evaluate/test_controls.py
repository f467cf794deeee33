"""Grounding controls: the location prior picks patches inside the named region, reading no image;
content shuffling keeps positions and swaps contents between patients."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from simcrop.evaluate.controls import (ORGAN_LABELS, content_shuffled_topk, donor_volumes, location_prior,
                                       parse_location, patch_share, region_mask)
from simcrop_kernels import topk_similarity

PATCH = (4, 4, 4)


def _organ_map() -> np.ndarray:
    """(32, 16, 32) RAS map: right lung x 0-15, left lung x 16-31 (both z 4-27, y 2-13), heart, aorta, bone."""
    organs = np.zeros((32, 16, 32), np.uint8)
    organs[0:14, 2:14, 4:28] = ORGAN_LABELS["right_lung"]
    organs[18:32, 2:14, 4:28] = ORGAN_LABELS["left_lung"]
    organs[14:18, 8:14, 4:12] = ORGAN_LABELS["heart"]
    organs[14:18, 0:4, 4:28] = ORGAN_LABELS["aorta"]
    organs[12:20, 14:16, 8:24] = ORGAN_LABELS["bone"]
    return organs


def _patch_centres(shape, patch):
    grid = [np.arange(s // p) * p + p / 2 for s, p in zip(shape, patch)]
    return np.stack(np.meshgrid(*grid, indexing="ij"), -1).reshape(-1, 3)      # h-major, d-minor


@pytest.mark.parametrize("text, organ, sides, zones", [
    ("A 12 mm nodule is seen in the right upper lobe.", "lung", ("right",), ("upper",)),
    ("In the superior lingular segment of the left upper lobe, a nodule.", "lung", ("left",), ("middle",)),
    ("Emphysema is seen in both lower lobes.", "lung", ("left", "right"), ("lower",)),
    ("There is a small left-sided pleural effusion.", "lung", ("left",), ()),
    ("Calcific plaques are seen along the left anterior descending artery.", "heart", (), ()),
    ("The heart is enlarged, more prominent on the left.", "heart", (), ()),
    ("Sternotomy wires are seen, compatible with previous cardiac surgery.", "sternum", (), ()),
    ("Lymphadenopathy is seen in the right hilar region.", "mediastinum", (), ()),
    ("Atherosclerotic plaques are seen in the wall of the aortic arch.", "aorta", (), ("upper",)),
    ("A sliding hiatal hernia is seen at the lower end of the esophagus.", "hiatus", (), ()),
    ("Mosaic attenuation is seen.", None, (), ()),
])
def test_parse_location(text, organ, sides, zones):
    loc = parse_location(text)
    assert (loc.organ, loc.sides, loc.zones) == (organ, sides, zones)


def test_prior_picks_patches_inside_the_named_region():
    organs = _organ_map()
    centres = _patch_centres(organs.shape, PATCH)
    n, k = centres.shape[0], 6
    texts = ["A nodule in the right upper lobe.", "A nodule in the left lower lobe.", "Left pleural effusion.",
             "The heart is enlarged.", "Mosaic attenuation is seen."]
    res = location_prior(texts, [organs] * len(texts), PATCH, n, k, seed=0)
    assert res.indices.shape == (5, k) and res.fallbacks == {"region": 4, "no_location_word": 1, "random": 0}
    ruq, lll, left, heart, lungs = (centres[i] for i in res.indices.numpy())
    assert (ruq[:, 0] < 16).all() and (ruq[:, 2] >= 16).all()           # right lung (x < 16), upper half (+z up)
    assert (lll[:, 0] >= 16).all() and (lll[:, 2] < 16).all()
    assert (left[:, 0] >= 16).all()
    heart_patches = np.flatnonzero(patch_share(organs == ORGAN_LABELS["heart"], PATCH) > 0)
    assert set(res.indices[3].tolist()) <= set(heart_patches.tolist())
    lung_share = patch_share(np.isin(organs, [1, 2]), PATCH)
    assert (lung_share[res.indices[4].numpy()] == 1).all()              # whole lungs, fully inside first
    # seeded: same picks again; another seed breaks the ties differently
    again = location_prior(texts, [organs] * len(texts), PATCH, n, k, seed=0)
    assert torch.equal(again.indices, res.indices)
    assert not torch.equal(location_prior(texts, [organs] * 5, PATCH, n, k, seed=1).indices, res.indices)


def test_prior_reads_no_image_and_falls_back_to_random():
    organs = _organ_map()
    n = patch_share(organs > 0, PATCH).size
    res = location_prior(["A nodule in the right upper lobe.", "The heart is enlarged."],
                         [None, np.zeros_like(organs)], PATCH, n, 5, seed=0)
    assert res.fallbacks["random"] == 2 and res.indices.shape == (2, 5)
    assert len(set(res.indices[0].tolist())) == 5


def test_region_mask_zones_follow_the_lung_extent():
    organs = _organ_map()
    upper = region_mask(organs, parse_location("right upper lobe"))
    z = np.nonzero(upper.any(axis=(0, 1)))[0]
    assert z.min() == 16 and z.max() == 27 and not upper[16:].any()
    assert region_mask(organs, parse_location("anterior segment of the right upper lobe"))[:, :8].sum() == 0


def test_donors_are_a_derangement_of_patients():
    groups = np.array(["p0", "p0", "p1", "p2", "p3", "p3"])
    donors = donor_volumes(groups, seed=0)
    assert (groups[donors] != groups).all()
    assert set(groups[donors]) == set(groups)                           # every patient donates (a permutation)
    assert (donor_volumes(groups, seed=0) == donors).all()
    with pytest.raises(ValueError, match="two patients"):
        donor_volumes(["p0", "p0"])


def test_content_shuffling_keeps_positions_and_swaps_contents():
    g = torch.Generator().manual_seed(0)
    V, N, D, k = 4, 16, 8, 3
    patches = F.normalize(torch.randn(V, N, D, generator=g), dim=-1)
    s2v = torch.tensor([0, 0, 1, 2, 3])
    sentences = F.normalize(torch.randn(len(s2v), D, generator=g), dim=-1)
    donors = donor_volumes(np.arange(V), seed=3)
    assert (donors != np.arange(V)).all()
    shuffled = content_shuffled_topk(sentences, patches, k, s2v, donors)
    for s, v in enumerate(s2v.tolist()):
        # indices on the same N-patch grid (positions kept), chosen by the donor's contents
        expect = torch.topk(patches[donors[v]] @ sentences[s], k).indices
        assert shuffled[s].tolist() == expect.tolist()
    own = topk_similarity(sentences, patches, k, mode="own", sentence_to_volume=s2v).indices
    assert not torch.equal(own, shuffled)
