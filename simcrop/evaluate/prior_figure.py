"""One lesion sentence, two choices of K patches: the model's (from the image) beside the location
prior's (from the sentence's words and the anatomy map alone), on the axial layer through the lesion.

The sentence shown is one the model points at correctly (best patch on the lesion), preferring picks
that beat the prior's, then the most focal lesion (highest hit over chance, so a small nodule rather than
a diffuse pattern): the figure shows that an image-based choice exists, not how often it happens — the
hit rates with their intervals say that.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from simcrop.evaluate.heatmap import DISPLAY_WINDOW, radiological, upsample
from simcrop.io import atomic_path


def pick_sentence(model_hit, model_pointing, prior_hit, chance) -> int | None:
    """Index of the sentence to show: the model's best patch on the lesion; then model hit above the
    prior's; then the largest model hit over chance (ties: the first). None when the model points
    correctly at no sentence."""
    model_hit, model_pointing, prior_hit, chance = (torch.as_tensor(x, dtype=torch.float64)
                                                    for x in (model_hit, model_pointing, prior_hit, chance))
    ok = (model_pointing > 0).nonzero().flatten().tolist()
    if not ok:
        return None
    return max(ok, key=lambda i: (bool(model_hit[i] > prior_hit[i]), float(model_hit[i] / chance[i]), -i))


def comparison_figure(volume, lesion, sims, model_top, prior_top, sentence: str, out_png, title: str = "") -> Path:
    """Write a PNG (atomic): two panels of the axial patch layer holding most of the model's picks on the
    lesion (ties: most lesion).

    volume (X, Y, Z) scaled HU (the centre crop); lesion (X, Y, Z) bool; sims (gh, gw, gd) the model's
    cosine per patch; model_top, prior_top: flat patch indices (ViT token order) of the two choices.
    Each panel's title counts that choice's picks on the lesion over the whole crop, not only this layer.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    volume, lesion = np.asarray(volume, dtype=np.float32), np.asarray(lesion, dtype=bool)
    sims = np.asarray(sims, dtype=np.float32)
    grid = sims.shape
    patch = [s // g for s, g in zip(volume.shape, grid)]
    on_lesion = lesion.reshape(grid[0], patch[0], grid[1], patch[1], grid[2], patch[2]).any(axis=(1, 3, 5))
    model_on = np.zeros(grid, dtype=bool)
    model_on.reshape(-1)[np.asarray(model_top, dtype=np.int64)] = True
    model_on &= on_lesion
    layer = int(np.lexsort((on_lesion.sum(axis=(0, 1)), model_on.sum(axis=(0, 1))))[-1])
    z = layer * patch[2] + patch[2] // 2
    heat = upsample(sims, volume.shape)
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 4.6))
    for ax, (name, top, show_heat) in zip(axes, (("model (image)", model_top, True),
                                                 ("location prior (words + anatomy)", prior_top, False))):
        top = np.asarray(top, dtype=np.int64)
        hits = int(on_lesion.reshape(-1)[top].sum())
        ax.imshow(radiological(volume[:, :, z]), cmap="gray", vmin=DISPLAY_WINDOW[0], vmax=DISPLAY_WINDOW[1],
                  origin="lower", interpolation="nearest")
        if show_heat:
            ax.imshow(radiological(heat[:, :, z]), cmap="inferno", alpha=0.25, origin="lower",
                      interpolation="nearest")
        if lesion[:, :, z].any():
            ax.contour(radiological(lesion[:, :, z]).astype(float), levels=[0.5], colors="cyan", linewidths=1.5)
        gx, gy, gz = np.unravel_index(top, grid)
        here = gz == layer
        xs = volume.shape[0] - 1 - (gx[here] * patch[0] + (patch[0] - 1) / 2)     # x reversed by the view
        ax.scatter(xs, gy[here] * patch[1] + (patch[1] - 1) / 2, s=22, c="lime", marker="s")
        ax.set_title(f"{name}\n{hits} of {len(top)} picks on the lesion ({int(here.sum())} in this layer)",
                     fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle((title + "\n" if title else "") + f"\u201c{sentence}\u201d", fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out_png
