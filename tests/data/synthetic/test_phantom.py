"""Realism targets of docs/data.md, measured inside the body.

Body mask: HU > −500, holes filled per axial slice (so lungs and airways count as body), largest
3-D component (drops the table). Measured on reconstructed images (kernel blur + noise), as a user sees them.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from simcrop.data.synthetic.corpus import reconstruct
from simcrop.data.synthetic.phantom import ORGAN_LABELS, build_phantom, draw_anatomy
from simcrop.data.synthetic.presets import PRESETS, draw_grid
from simcrop.data.synthetic.shapes import Frame


def body_fractions(hu: np.ndarray) -> dict:
    body = hu > -500
    for k in range(body.shape[2]):
        body[:, :, k] = ndimage.binary_fill_holes(body[:, :, k])
    lab, n = ndimage.label(body)
    body = lab == 1 + int(np.argmax(ndimage.sum(body, lab, range(1, n + 1))))
    x = hu[body]
    return {"lung": np.mean((x >= -950) & (x <= -500)), "soft": np.mean((x >= -100) & (x <= 100)),
            "bone": np.mean(x > 300), "median": float(np.median(x))}


def _case(i: int):
    rng = np.random.default_rng([7, i])
    grid, place = draw_grid(PRESETS["small"], rng)
    anatomy = draw_anatomy(rng, place["z_apex"] - grid.origin[2])
    return build_phantom(anatomy, Frame(grid, **place), rng), rng


def test_hu_fractions_inside_body_match_real_chest_ct():
    stats = []
    for i in range(8):      # single cases vary a lot (body habitus, coverage): targets are means
        ph, rng = _case(i)
        stats.append(body_fractions(reconstruct(ph["hu"], i % 2 == 1, PRESETS["small"].noise_scale, rng).astype(np.float32)))
    mean = {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}
    assert 0.17 <= mean["lung"] <= 0.24, mean
    assert 0.43 <= mean["soft"] <= 0.53, mean
    assert 0.02 <= mean["bone"] <= 0.06, mean
    assert -100 <= mean["median"] <= -40, mean
    for s in stats:          # per case: plausible, with anatomical variation
        assert 0.10 <= s["lung"] <= 0.32 and 0.33 <= s["soft"] <= 0.62 and 0.015 <= s["bone"] <= 0.07, s
        assert -125 <= s["median"] <= 10, s


def test_organ_map_has_every_organ_and_sides_are_right():
    ph, _ = _case(0)
    organs = ph["organs"]
    assert set(np.unique(organs)) == {0, *ORGAN_LABELS.values()}
    xs_right = np.argwhere(organs == ORGAN_LABELS["right_lung"])[:, 0].mean()
    xs_left = np.argwhere(organs == ORGAN_LABELS["left_lung"])[:, 0].mean()
    assert xs_right > xs_left                 # canonical RAS order: larger x index is the patient's right
    heart_x = np.argwhere(organs == ORGAN_LABELS["heart"])[:, 0].mean()
    assert heart_x < organs.shape[0] / 2 + 2  # the heart lies left of the midline
    assert np.isin(ph["lobes"][organs == ORGAN_LABELS["right_lung"]], [1, 2, 3]).all()


def test_abdomen_phantom_has_no_lungs():
    rng = np.random.default_rng(3)
    grid, place = draw_grid(PRESETS["small"], rng)
    anatomy = draw_anatomy(rng, 250.0, kind="abdomen")
    ph = build_phantom(anatomy, Frame(grid, **place), rng)
    assert not np.isin(ph["organs"], [ORGAN_LABELS["right_lung"], ORGAN_LABELS["left_lung"]]).any()
