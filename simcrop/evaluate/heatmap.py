"""Heat-map figures: a sentence's similarity to each patch, over a few axial slices of the CT crop.

The per-patch cosine is drawn at patch resolution (each patch a block of its voxels: what the model
actually scores), over the centre crop the model saw, with the lesion outline when a mask is known.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from simcrop.io import atomic_path

DISPLAY_WINDOW = (-1.0, 0.4)       # scaled HU (-1000, 400): lung texture and mediastinum, as the montage
CAPTION_WIDTH = 70


def upsample(sims: np.ndarray, shape) -> np.ndarray:
    """sims (gh, gw, gd) per patch → (X, Y, Z) voxels, each patch's value over its block."""
    sims = np.asarray(sims, dtype=np.float32)
    reps = [s // g for s, g in zip(shape, sims.shape)]
    if any(s % g for s, g in zip(shape, sims.shape)):
        raise ValueError(f"volume shape {tuple(shape)} is not a multiple of the patch grid {sims.shape}")
    return np.kron(sims, np.ones(reps, dtype=np.float32))


def pick_slices(sims: np.ndarray, lesion: np.ndarray | None, n_slices: int, patch_depth: int) -> list[int]:
    """Axial slices (voxel z), in z order: the lesion's largest cross-section first, then the centres of
    the patch layers holding the highest similarities (one slice per layer)."""
    gd = sims.shape[2]
    slices, layers = [], []
    if lesion is not None and lesion.any():
        z = int(np.argmax(lesion.sum(axis=(0, 1))))
        slices.append(z)
        layers.append(z // patch_depth)
    for layer in np.argsort(-sims.max(axis=(0, 1)), kind="stable"):
        if len(slices) >= min(n_slices, gd):
            break
        if int(layer) not in layers:
            layers.append(int(layer))
            slices.append(int(layer) * patch_depth + patch_depth // 2)
    return sorted(slices)


def heatmap_figure(volume, sentence: str, sims, out_png, lesion=None, title: str = "", n_slices: int = 4,
                   top_patches=None) -> Path:
    """Write a PNG (atomic): n_slices axial slices of `volume` with `sims` overlaid.

    volume (X, Y, Z) float scaled HU in [-1, 1] (the centre crop); sims (gh, gw, gd) cosine per patch
    (X, Y, Z multiples of it); lesion (X, Y, Z) bool or None; top_patches: flat patch indices (h-major,
    d-minor, as the ViT orders tokens) to mark with a dot, e.g. the sentence's top-K.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    volume, sims = np.asarray(volume, dtype=np.float32), np.asarray(sims, dtype=np.float32)
    if volume.ndim != 3 or sims.ndim != 3:
        raise ValueError(f"expected volume (X, Y, Z) and sims (gh, gw, gd); got {volume.shape}, {sims.shape}")
    lesion = None if lesion is None else np.asarray(lesion, dtype=bool)
    heat = upsample(sims, volume.shape)
    patch = [s // g for s, g in zip(volume.shape, sims.shape)]
    slices = pick_slices(sims, lesion, n_slices, patch[2])
    lo, hi = float(sims.min()), float(sims.max())
    marks = np.zeros(sims.shape, dtype=bool)
    if top_patches is not None:
        marks.reshape(-1)[np.asarray(top_patches, dtype=np.int64)] = True
    fig, axes = plt.subplots(1, len(slices), figsize=(3.2 * len(slices), 3.9), squeeze=False)
    for ax, z in zip(axes[0], slices):
        # RAS array → radiological view (patient right on the viewer's left, anterior up), as the montage
        def view(a):
            return a.T[:, ::-1]
        ax.imshow(view(volume[:, :, z]), cmap="gray", vmin=DISPLAY_WINDOW[0], vmax=DISPLAY_WINDOW[1],
                  origin="lower", interpolation="nearest")
        image = ax.imshow(view(heat[:, :, z]), cmap="inferno", vmin=lo, vmax=hi, alpha=0.45, origin="lower",
                          interpolation="nearest")
        if lesion is not None and lesion[:, :, z].any():
            ax.contour(view(lesion[:, :, z]).astype(float), levels=[0.5], colors="cyan", linewidths=1.5)
        hs, ws = np.nonzero(marks[:, :, z // patch[2]])
        if len(hs):
            xs = volume.shape[0] - 1 - (hs * patch[0] + (patch[0] - 1) / 2)      # x flipped by `view`
            ax.scatter(xs, ws * patch[1] + (patch[1] - 1) / 2, s=10, c="lime", marker="o")
        ax.set_title(f"z = {z}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=list(axes[0]), fraction=0.02, pad=0.01, label="cosine")
    caption = "\n".join(textwrap.wrap(sentence, CAPTION_WIDTH)[:3])
    fig.suptitle(f"{title}\n{caption}" if title else caption, fontsize=8)
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return out_png
