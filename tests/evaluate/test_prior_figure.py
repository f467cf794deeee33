"""The model-vs-location-prior figure: which sentence it shows, and that it draws both choices."""
import numpy as np
from PIL import Image

from simcrop.evaluate.prior_figure import comparison_figure, pick_sentence


def test_pick_sentence_needs_a_correct_best_patch_beating_the_prior_then_the_most_focal_lesion():
    hit, pointing = [0.9, 0.5, 0.6, 0.2, 0.8], [0, 1, 1, 1, 1]
    prior, chance = [0.0, 0.1, 0.4, 0.0, 0.9], [0.01, 0.05, 0.3, 0.01, 0.01]
    assert pick_sentence(hit, pointing, prior, chance) == 3   # 20x chance (index 1: 10x); index 4 does not beat the prior
    assert pick_sentence([0.5, 0.5], [1, 1], [0.1, 0.1], [0.1, 0.1]) == 0
    assert pick_sentence([0.5], [1], [0.9], [0.1]) == 0       # none beats the prior: still one to show
    assert pick_sentence(hit, [0] * 5, prior, chance) is None  # no sentence pointed at correctly


def test_comparison_figure_writes_two_panels(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.uniform(-1, 1, (16, 16, 8)).astype(np.float32)
    lesion = np.zeros((16, 16, 8), bool)
    lesion[4:8, 4:8, 4:8] = True                              # patch (1, 1, 1) of a 4 x 4 x 2 grid
    sims = rng.normal(size=(4, 4, 2)).astype(np.float32)
    model_top = [np.ravel_multi_index((1, 1, 1), (4, 4, 2)), 0]
    prior_top = [np.ravel_multi_index((3, 3, 1), (4, 4, 2)), 1]
    png = comparison_figure(volume, lesion, sims, model_top, prior_top, "A nodule in the right upper lobe.",
                            tmp_path / "f.png", "vol_1")
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape[0] > 200 and image.shape[1] > 400
    lime = (image[..., 1] > 200) & (image[..., 0] < 100) & (image[..., 2] < 100)
    half = image.shape[1] // 2
    assert lime[:, :half].any() and lime[:, half:].any()      # each panel marks its picks
    assert not list(tmp_path.glob(".f.png.*"))                # written through a temporary file
