"""Heat-map figures: a sentence's similarity to each patch, over a few axial slices of the CT crop.

The per-patch cosine is drawn at patch resolution (each patch a block of its voxels: what the model
actually scores), over the centre crop the model saw, with the lesion outline when a mask is known.
`orthogonal_figure` draws axial, coronal and sagittal slices through one patch instead (`simcrop heatmap`).
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
    return _finish(fig, image, list(axes[0]), sentence, title, out_png)


# --- three orthogonal views through one point (simcrop heatmap) -------------------------------------------
# Each view of a RAS array is `radiological(slice)`: rows run along the second slice axis upwards (origin
# "lower"), columns along the first axis reversed. Axial (X, Y): patient's right on the viewer's left,
# anterior up. Coronal (X, Z): right on the left, superior up. Sagittal (Y, Z): anterior on the left,
# superior up (the patient faces the viewer's left), as radiology workstations show them.
VIEWS = (  # name, axis held fixed, letters (viewer's left, right, top, bottom)
    ("axial", 2, ("R", "L", "A", "P")),
    ("coronal", 1, ("R", "L", "S", "I")),
    ("sagittal", 0, ("A", "P", "S", "I")),
)


def radiological(a2: np.ndarray) -> np.ndarray:
    """A slice (first axis, second axis) of a RAS array → image rows (second axis, drawn with origin
    "lower") × columns (first axis reversed): radiological convention, patient's right on image left."""
    return np.asarray(a2).T[:, ::-1]


def orthogonal_figure(volume, heat, spacing, centre, box, sentence: str, out_png, mask=None, title: str = "",
                      vrange=None) -> Path:
    """Write a PNG (atomic): axial, coronal and sagittal slices of `volume` through voxel `centre`, with
    `heat` overlaid, the `box` outlined (lime) and `mask` outlined (cyan) where given.

    volume, heat (X, Y, Z) on one RAS grid (volume scaled HU in [-1, 1]); spacing (3,) mm of that grid,
    for true proportions; centre (3,) int voxel; box ((x0, x1), (y0, y1), (z0, z1)) inclusive voxel
    ranges (the best patch); mask (X, Y, Z) bool or None; vrange (lo, hi) of the colour scale (default:
    the heat's min and max). Views in radiological convention with orientation letters (see VIEWS).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    volume, heat = np.asarray(volume, dtype=np.float32), np.asarray(heat, dtype=np.float32)
    if volume.ndim != 3 or volume.shape != heat.shape:
        raise ValueError(f"expected volume and heat (X, Y, Z) on one grid; got {volume.shape}, {heat.shape}")
    mask = None if mask is None else np.asarray(mask, dtype=bool)
    spacing = [float(s) for s in spacing]
    centre = [int(np.clip(c, 0, n - 1)) for c, n in zip(centre, volume.shape)]
    lo, hi = vrange if vrange is not None else (float(np.nanmin(heat)), float(np.nanmax(heat)))
    fig, axes = plt.subplots(1, 3, figsize=(11.5, 4.4))
    image = None
    for ax, (name, fixed, letters) in zip(axes, VIEWS):
        free = [a for a in range(3) if a != fixed]                   # (first, second) axis of the slice
        index = [slice(None)] * 3
        index[fixed] = centre[fixed]
        index = tuple(index)
        aspect = spacing[free[1]] / spacing[free[0]]                 # row height / column width in mm
        ax.imshow(radiological(volume[index]), cmap="gray", vmin=DISPLAY_WINDOW[0], vmax=DISPLAY_WINDOW[1],
                  origin="lower", interpolation="nearest", aspect=aspect)
        image = ax.imshow(radiological(heat[index]), cmap="inferno", vmin=lo, vmax=hi, alpha=0.45,
                          origin="lower", interpolation="nearest", aspect=aspect)
        if mask is not None and mask[index].any():
            ax.contour(radiological(mask[index]).astype(float), levels=[0.5], colors="cyan", linewidths=1.2)
        (c0, c1), (r0, r1) = box[free[0]], box[free[1]]
        width = volume.shape[free[0]]
        ax.add_patch(Rectangle((width - 1 - c1 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False,
                               edgecolor="lime", linewidth=1.2))
        style = dict(transform=ax.transAxes, color="yellow", fontsize=10, fontweight="bold")
        ax.text(0.02, 0.5, letters[0], ha="left", va="center", **style)
        ax.text(0.98, 0.5, letters[1], ha="right", va="center", **style)
        ax.text(0.5, 0.98, letters[2], ha="center", va="top", **style)
        ax.text(0.5, 0.02, letters[3], ha="center", va="bottom", **style)
        ax.set_title(f"{name} ({'xyz'[fixed]} = {centre[fixed]})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    return _finish(fig, image, list(axes), sentence, title, out_png)


def _finish(fig, image, axes, sentence: str, title: str, out_png) -> Path:
    """Colour bar, the sentence (three lines at most) under the title, then an atomic PNG write."""
    fig.colorbar(image, ax=axes, fraction=0.02, pad=0.01, label="cosine")
    caption = "\n".join(textwrap.wrap(sentence, CAPTION_WIDTH)[:3])
    fig.suptitle(f"{title}\n{caption}" if title else caption, fontsize=8)
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    import matplotlib.pyplot as plt       # imported by the callers already (Agg backend set there)

    plt.close(fig)
    return out_png
