"""Where the top-K picks land, on a hand-made 2 x 2 x 2 patch grid whose answers are known."""
from __future__ import annotations

import math

import torch

from simcrop.model.alignment_diagnostics import AIR, BODY, LUNG, alignment_diagnostics, patch_classes

PATCH = (4, 4, 2)
SHAPE = (8, 8, 4)          # patches in token order: index = 4 * x + 2 * y + z


def grid():
    """Patch 0 lung, patch 1 outside air, the rest body; a lesion (id 7) in patch 5."""
    image = torch.zeros(1, 1, *SHAPE)                       # soft tissue
    organ = torch.zeros(1, *SHAPE, dtype=torch.long)
    organ[0, :4, :4, :2] = 1                                 # patch 0: right lung
    image[0, 0, :4, :4, 2:] = -1.0                           # patch 1: air, no organ
    lesion = torch.zeros(1, *SHAPE, dtype=torch.long)
    lesion[0, 4:, :4, 2:] = 7                                # patch 5 = (x 1, y 0, z 1)
    return image, organ, lesion


def test_patch_classes():
    image, organ, _ = grid()
    classes = patch_classes(image[:, 0], organ, PATCH)
    assert classes[0].tolist() == [LUNG, AIR, BODY, BODY, BODY, BODY, BODY, BODY]


def test_hits_shares_and_distinct_picks():
    image, organ, lesion = grid()
    ids_keep = torch.tensor([[0, 1, 5, 6]])                  # visible patches (grid indices)
    # sentence 0 (lesion 7) picks visible 2 (= patch 5, the lesion) and 0 (lung); sentence 1 (no lesion)
    # picks visible 1 (air) and 0 (lung): patches 5, 0, 1, 0 = 3 distinct of 4 picks
    indices = torch.tensor([[2, 0], [1, 0]])
    out = alignment_diagnostics(indices, ids_keep, torch.tensor([0, 0]), [[[7], []]], image, lesion, organ, PATCH)
    assert out["lesion_hit_share"] == 1.0 and out["lesion_hit_fraction"] == 0.5
    assert out["picks_lung"] == 0.5 and out["picks_air"] == 0.25 and out["picks_body"] == 0.25
    assert out["distinct_picks"] == 0.75


def test_hidden_lesion_and_single_sentence_reports_do_not_count():
    image, organ, lesion = grid()
    ids_keep = torch.tensor([[0, 1, 2, 3]])                  # the lesion's patch 5 is masked out
    out = alignment_diagnostics(torch.tensor([[0, 1]]), ids_keep, torch.tensor([0]), [[[7]]], image, lesion,
                                organ, PATCH)
    assert math.isnan(out["lesion_hit_share"]) and math.isnan(out["distinct_picks"])
    assert out["picks_lung"] == 0.5 and out["picks_air"] == 0.5
