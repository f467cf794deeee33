"""A PNG montage of a few cases: an axial slice through a lesion, its outline, and the sentence naming it.

Works for any preprocessed run: synthetic cases show their planted lesions and the report sentence the
sentence→lesion map points to; real cases (no lesion masks) show the mid-thorax slice and the first
Findings sentence.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np

from simcrop import layout
from simcrop.data.selection import select_volumes
from simcrop.data.preprocessed_io import read_preprocessed
from simcrop.io import atomic_path

DISPLAY_WINDOW_HU = (-1000.0, 400.0)   # one window that shows lung texture and mediastinum
CAPTION_WIDTH = 44                     # characters per caption line
MIN_OUTLINE_VOXELS = 4                 # a lesion smaller than this on its best slice is a dot, not a picture


def _sentences_by_volume(path: Path) -> dict[str, list[dict]]:
    out = {}
    if path.exists():
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                out[row["volume_id"]] = row["sentences"]
    return out


def _pick_case(volume_path: Path, mask_path: Path | None, sentences: list[dict]):
    """Return (axial slice (x, y) HU, outline mask or None, caption) for one preprocessed case."""
    image = read_preprocessed(volume_path)
    findings = [s for s in sentences if s.get("section") == "findings"]
    if mask_path is not None and mask_path.exists():
        mask = read_preprocessed(mask_path)
        described = {i for s in findings for i in s.get("lesion_ids", [])}
        ids, counts = np.unique(mask[mask > 0], return_counts=True)
        described_ids = [(c, i) for i, c in zip(ids.tolist(), counts.tolist()) if i in described]
        # The smallest described lesion that is still visible is the interesting one (a nodule rather
        # than a diffuse pattern); cut through its largest axial cross-section.
        area = {i: (mask == i).sum(axis=(0, 1)) for _, i in described_ids}
        visible = [(c, i) for c, i in described_ids if area[i].max() >= MIN_OUTLINE_VOXELS]
        candidates = visible or described_ids
        if candidates:
            _, lesion = min(candidates)
            z = int(np.argmax(area[lesion]))
            sentence = next(s["text"] for s in findings if lesion in s.get("lesion_ids", []))
            return image[:, :, z], mask[:, :, z] == lesion, sentence
    z = image.shape[2] // 2
    sentence = findings[0]["text"] if findings else "(no Findings sentence)"
    return image[:, :, z], None, sentence


def write_montage(manifest: Path, sentences: Path, preprocessed: Path, out: Path, n_cases: int = 4) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_volume = _sentences_by_volume(Path(sentences))
    preprocessed = layout.Preprocessed(preprocessed)
    # Usable volumes of every split (QC when the folder beside `preprocessed/` was gathered, so a stale
    # file of a quarantined volume is not shown); then prefer cases with described lesions.
    qc = layout.DataDir(preprocessed.root.parent).qc
    usable = select_volumes(manifest, qc if qc.exists() else None, preprocessed)
    rows = [r for _, r in usable.frame.iterrows()]
    rows.sort(key=lambda r: (0 if r.lesions not in ("", "[]") else 1, r.volume_id))
    one_per_scan = {}
    for row in rows:  # reconstructions repeat their scan's anatomy and report: show distinct scans
        one_per_scan.setdefault(row.scan_id, row)
    rows = list(one_per_scan.values())[:n_cases]
    if not rows:
        raise ValueError(f"{preprocessed.root}: no preprocessed volumes to show")

    fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 4.6), squeeze=False)
    for ax, row in zip(axes[0], rows):
        axial, outline, caption = _pick_case(preprocessed.volume(row.volume_id),
                                             preprocessed.mask(row.volume_id, "lesion"),
                                             by_volume.get(row.volume_id, []))
        # RAS array: x grows to the patient's right, y to anterior. Radiological view: patient right on
        # the viewer's left, anterior up, so transpose to (y, x), flip x, and draw with origin="lower".
        ax.imshow(axial.T[:, ::-1], cmap="gray", vmin=DISPLAY_WINDOW_HU[0], vmax=DISPLAY_WINDOW_HU[1],
                  origin="lower", interpolation="nearest")
        if outline is not None and outline.any():
            ax.contour(outline.T[:, ::-1].astype(float), levels=[0.5], colors="red", linewidths=1.2)
        ax.set_title(row.volume_id, fontsize=9)
        ax.set_xlabel("\n".join(textwrap.wrap(caption, CAPTION_WIDTH)), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out
