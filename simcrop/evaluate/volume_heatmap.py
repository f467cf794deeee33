"""`simcrop heatmap`: where in this volume does the model put this sentence?

Any volume (a raw NIfTI / DICOM series / MetaImage, or an already preprocessed NIfTI), any sentences and
a pre-training checkpoint → per sentence a PNG and a float32 NIfTI heat map on the input's own grid.

    raw volume ──load_volume──► HU, RAS affine ──validate──► resample to preprocess.spacing (+ size),
        clip to hu_window, int16        (simcrop.data.preprocess, steps 1-3, in memory: nothing is written
                                         into the run; a raw NIfTI is taken to be in HU)
      ──► scaled HU [-1, 1] on the preprocessed RAS grid (`preprocessed_io.load_preprocessed`, as training)
      ──► pad (pretrain.pad_mode, symmetric, as the eval chain) and tile with model.img_size crops,
          stride half a crop (a multiple of the patch), so every voxel is seen, not only the centre crop
      ──► per tile: patch features (N, D) · sentence (D,) = cosine per patch; the tiles' patches share one
          lattice over the padded volume, and each lattice cell gets the mean cosine of the tiles that hold it
      ──► painted on the preprocessed grid (each patch's value over its voxels), padding cut off
      ──► nearest-neighbour resampled onto the INPUT volume's grid and affine (for DICOM: the RAS affine
          the loader gives) → `<stem>_<n>_<sentence>.nii.gz`, float32, overlays in 3D Slicer / ITK-SNAP.

Nearest, not trilinear: the map is piecewise constant per patch (that is what the model scores), so each
input voxel takes the value of the patch it lies in; no in-between values are invented. (The map's
maximum may belong to an edge cell that lies mostly outside the volume; the best patch below does not.) Input voxels outside the preprocessed grid (only when
`preprocess.size` crops the volume) get the map's minimum.

The best patch is the lattice cell with the highest cosine among those lying at least half inside the
volume; the PNG shows axial, coronal and sagittal slices through its centre (radiological convention:
patient's right on the image left; R/L, A/P, S/I letters), the patch outlined in lime and the optional
`--mask` (any label map; voxels > 0, resampled nearest onto the preprocessed grid) in cyan. A JSON file
`<stem>.heatmap.json` lists, per sentence, the files, the cosine range and the best patch's centre in
RAS mm and in input voxels.

A volume no larger than the crop is one tile: the same centre crop as `heatmap_for_text` and `simcrop
ground` draw. The model settings (crop, patch, pad mode, text length) come from the checkpoint's own
config; the preprocessing settings from the run's config (`--config`), with a warning when the checkpoint
recorded others.
"""
from __future__ import annotations

import logging
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import torch

from simcrop.config import PreprocessConfig
from simcrop.data.preprocess import to_output_grid, validate
from simcrop.data.quarantine import BadVolume
from simcrop.data.volume_io import load_volume, write_nifti
from simcrop.data.preprocessed_io import load_preprocessed, open_preprocessed, scale_hu
from simcrop.evaluate.embed import NotApplicableError, encode_sentences, feature_kind, load_model, patch_features
from simcrop.evaluate.heatmap import orthogonal_figure
from simcrop.evaluate.tiling import Tiling, tile_batches, tiling  # noqa: F401  (Tiling, tiling: re-exported)
from simcrop.io import DataError, write_json_atomic

log = logging.getLogger(__name__)

PREPROCESS_KEYS = ("spacing", "hu_window", "size")


class HeatmapInputError(DataError):
    """A missing or unusable checkpoint, volume, mask or sentence; the message names it."""


@dataclass
class PreparedVolume:
    """image (X, Y, Z) float32 scaled HU in [-1, 1] on the preprocessed RAS grid `affine`; the input's own
    grid (`input_shape`, `input_affine`: voxel → RAS mm) is where the heat map goes."""

    image: np.ndarray
    affine: np.ndarray
    input_shape: tuple
    input_affine: np.ndarray
    path: str

    @property
    def spacing(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))


def volume_format(path) -> str:
    """A folder is a DICOM series; .nii/.nii.gz NIfTI; .mhd/.mha MetaImage."""
    path = Path(path)
    if path.is_dir():
        return "dicom"
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".mhd", ".mha")):
        return "mhd"
    raise HeatmapInputError(f"{path}: not a volume simcrop heatmap reads (a NIfTI .nii/.nii.gz, a DICOM series "
                            "folder or a MetaImage .mhd/.mha)")


def prepare_volume(path, cfg: PreprocessConfig, preprocessed: bool = False) -> PreparedVolume:
    """Load `path` and bring it onto the grid and intensity scale the model was trained on.

    preprocessed: `path` is already a `simcrop preprocess` output (int16 HU, RAS); it is used as it is and
    its grid is also the output grid. Otherwise the preprocess steps run in memory with `cfg`.
    Raises HeatmapInputError naming the file for anything unreadable or implausible.
    """
    path = Path(path)
    if not path.exists():
        raise HeatmapInputError(f"{path}: volume not found")
    try:
        if preprocessed:
            stored = open_preprocessed(path)                      # either format (.b2nd cache or NIfTI)
            image, affine = load_preprocessed(stored, cfg.hu_window)[0].numpy(), stored.affine
            return PreparedVolume(image, affine, tuple(image.shape), affine, str(path))
        volume = load_volume(path, volume_format(path))
        hu = volume.array
        validate(hu, volume.affine, path, cfg)
    except HeatmapInputError:
        raise
    except (BadVolume, ValueError, OSError, nib.filebasedimages.ImageFileError) as err:
        message = str(err) if str(path) in str(err) else f"{path}: {err}"
        raise HeatmapInputError(message) from err
    grid, _, affine = to_output_grid(hu, volume.affine, cfg)           # preprocess_volume's steps, in memory
    image = scale_hu(grid, cfg.hu_window).numpy()                       # and the dataset's scaling
    return PreparedVolume(image, affine, tuple(hu.shape), np.asarray(volume.affine, dtype=np.float64), str(path))


@torch.no_grad()
def cell_similarity(model, image: np.ndarray, sentences: torch.Tensor, pad_mode: str = "reflect",
                    batch_size: int = 4) -> tuple[torch.Tensor, Tiling]:
    """image (X, Y, Z) in [-1, 1], sentences (S, D) normalised → ((S, *cells) mean cosine per lattice cell
    over the tiles holding it, the Tiling)."""
    encoder = model.encoder
    layout = tiling(image.shape, encoder.img_size, encoder.patch_size)
    sentences = sentences.float().to(next(model.parameters()).device)
    total = torch.zeros((sentences.shape[0], *layout.cells), dtype=torch.float64)
    count = torch.zeros(layout.cells, dtype=torch.float64)
    grid = encoder.grid_size
    for chunk, tiles in tile_batches(image, layout, pad_mode, batch_size):
        sims = (patch_features(model, tiles) @ sentences.T).cpu().double()        # (B, N, S)
        for corner, tile in zip(chunk, sims):
            cells = layout.cell_slices(corner, grid)
            total[(slice(None), *cells)] += tile.T.reshape(-1, *grid)
            count[cells] += 1
    return (total / count).float(), layout


def paint(cells: np.ndarray, layout: Tiling) -> np.ndarray:
    """(*cells) per lattice cell → (X, Y, Z) on the unpadded volume, each cell's value over its voxels."""
    reps = np.ones(layout.patch, dtype=np.float32)
    full = np.kron(np.asarray(cells, dtype=np.float32), reps)
    (bx, by, bz), (nx, ny, nz) = layout.before, layout.shape
    return np.ascontiguousarray(full[bx:bx + nx, by:by + ny, bz:bz + nz])


def best_cell(cells: np.ndarray, layout: Tiling) -> tuple[tuple[int, int, int], tuple]:
    """The highest lattice cell among those at least half inside the volume (along an axis where none is,
    those overlapping it most) → (cell index, its box on the volume: ((x0, x1), (y0, y1), (z0, z1))
    inclusive voxel ranges, clipped to the volume)."""
    allowed = []
    for g, p, b, n in zip(layout.cells, layout.patch, layout.before, layout.shape):
        start = np.arange(g) * p - b
        overlap = np.clip(np.minimum(start + p, n) - np.maximum(start, 0), 0, None)
        allowed.append(overlap >= min(p / 2, overlap.max()))
    ok = allowed[0][:, None, None] & allowed[1][None, :, None] & allowed[2][None, None, :]
    masked = np.where(ok, np.asarray(cells, dtype=np.float64), -np.inf)
    cell = tuple(int(i) for i in np.unravel_index(int(np.argmax(masked)), masked.shape))
    box = tuple((max(int(c * p - b), 0), min(int(c * p - b + p), n) - 1)
                for c, p, b, n in zip(cell, layout.patch, layout.before, layout.shape))
    return cell, box


def sample_nearest(src: np.ndarray, src_affine, out_shape, out_affine, cval: float,
                   extend_edge: bool = False) -> np.ndarray:
    """Nearest-neighbour sample `src` (voxel → RAS `src_affine`) at every voxel of the grid (`out_shape`,
    `out_affine`), any orientations. Points outside `src` get `cval`; with extend_edge, points up to one
    voxel past its edge take the edge value (a preprocessed grid ends within half a voxel of its input)."""
    from scipy import ndimage

    to_src = np.linalg.solve(np.asarray(src_affine, dtype=np.float64), np.asarray(out_affine, dtype=np.float64))
    offset = to_src[:3, 3]
    if extend_edge:
        src = np.pad(src, 1, mode="edge")
        offset = offset + 1.0
    return ndimage.affine_transform(src, to_src[:3, :3], offset=offset, output_shape=tuple(int(s) for s in out_shape),
                                    order=0, mode="constant", cval=cval)


def load_mask(path, vol: PreparedVolume) -> np.ndarray:
    """A label map on any grid → (X, Y, Z) bool (> 0) on the preprocessed grid."""
    path = Path(path)
    try:
        if path.name.endswith(".b2nd"):                         # a preprocessed mask (training cache)
            stored = open_preprocessed(path)
            mask, affine = stored.read(), stored.affine
        else:
            image = nib.load(str(path))
            mask, affine = np.asanyarray(image.dataobj), image.affine
        if mask.ndim == 4 and mask.shape[3] == 1:
            mask = mask[..., 0]
        if mask.ndim != 3:
            raise ValueError(f"not a 3-D label map: shape {mask.shape}")
        mask = (mask > 0).astype(np.uint8)
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise HeatmapInputError(f"{path}: unreadable mask ({type(err).__name__}: {err})") from err
    out = sample_nearest(mask, affine, vol.image.shape, vol.affine, 0).astype(bool)
    if not out.any():
        log.warning("mask %s has no voxel > 0 inside the volume's field of view", path)
    return out


def slug(text: str, width: int = 48) -> str:
    """File-name-safe short form of a sentence: lowercase words joined by '-'."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    out = "-".join(words)[:width].strip("-")
    return out or "sentence"


def volume_stem(path) -> str:
    name = Path(path).name
    for ext in (".nii.gz", ".nii", ".mhd", ".mha", ".b2nd"):
        if name.lower().endswith(ext):
            return name[:-len(ext)]
    return name


def _check_preprocess(cfg: PreprocessConfig, trained: PreprocessConfig, checkpoint) -> None:
    differ = [key for key in PREPROCESS_KEYS if getattr(cfg, key) != getattr(trained, key)]
    if differ:
        log.warning("preprocessing %s differ from the ones %s was trained with (%s); pass that run's --config "
                    "for a faithful heat map", {k: getattr(cfg, k) for k in differ}, checkpoint,
                    {k: getattr(trained, k) for k in differ})


def volume_heatmaps(checkpoint, volume, texts: Sequence[str], out_dir, cfg: PreprocessConfig, *, mask=None,
                    preprocessed: bool = False, device: str = "cpu", batch_size: int = 4,
                    text_encoder=None) -> list[dict]:
    """Heat maps of `texts` over `volume` → one dict per sentence {text, png, nifti, cosine_min,
    cosine_max, cosine_best, best_cell, best_box (preprocessed voxels), best_ras_mm, best_input_voxel}; also writes
    `<out_dir>/<stem>.heatmap.json` with them. See the module docstring for the method."""
    texts = [str(t) for t in texts]
    if not texts:
        raise HeatmapInputError("no sentence: give at least one --text")
    for i, text in enumerate(texts, 1):
        if not text.strip():
            raise HeatmapInputError(f"--text #{i} is empty: give a sentence to look for")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise HeatmapInputError(f"{checkpoint}: checkpoint not found (train one with `simcrop pretrain`, or "
                                "pass --checkpoint)")
    vol = prepare_volume(volume, cfg, preprocessed)                 # a bad volume fails before the model loads
    lesion = load_mask(mask, vol) if mask is not None else None
    try:
        model, model_cfg = load_model(checkpoint, device, text_encoder)
        if feature_kind(model) != "patch":
            raise NotApplicableError(f"objective {model_cfg.model.objective!r} has one global feature per volume, "
                                     "no per-patch similarity to draw")
    except NotApplicableError as err:
        raise HeatmapInputError(f"{checkpoint}: {err}") from err
    except (OSError, RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as err:
        raise HeatmapInputError(f"{checkpoint}: unreadable checkpoint ({type(err).__name__}: "
                                f"{str(err).strip()[:300]})") from err
    if not preprocessed:
        _check_preprocess(cfg, model_cfg.preprocess, checkpoint)
    elif not np.allclose(vol.spacing, model_cfg.preprocess.spacing, rtol=0.01):
        log.warning("%s has %s mm voxels; %s was trained on %s mm", vol.path, np.round(vol.spacing, 3).tolist(),
                    checkpoint, list(model_cfg.preprocess.spacing))
    sentences = encode_sentences(model, [t.strip() for t in texts], max_tokens=model_cfg.model.text_max_tokens)
    cells, layout = cell_similarity(model, vol.image, sentences, model_cfg.pretrain.pad_mode, batch_size)
    log.info("%s: %s voxels at %s mm, %d tile(s) of %s", vol.path, vol.image.shape,
             np.round(vol.spacing, 2).tolist(), layout.n_tiles, layout.crop)
    out_dir, stem = Path(out_dir), volume_stem(volume)
    results = []
    for i, text in enumerate(texts):
        heat = paint(cells[i].numpy(), layout)
        lo, hi = float(heat.min()), float(heat.max())
        cell, box = best_cell(cells[i].numpy(), layout)
        centre = np.array([(a + b) / 2 for a, b in box])
        ras = vol.affine @ np.append(centre, 1.0)
        in_voxel = np.linalg.solve(vol.input_affine, ras)[:3]
        on_input = sample_nearest(heat, vol.affine, vol.input_shape, vol.input_affine, np.nan, extend_edge=True)
        on_input[np.isnan(on_input)] = lo
        base = out_dir / f"{stem}_{i + 1}_{slug(text)}"
        nifti = base.with_name(base.name + ".nii.gz")
        write_nifti(nifti, on_input.astype(np.float32), vol.input_affine)
        title = (f"{Path(vol.path).name} · {model_cfg.model.objective} model · best patch (lime) cosine "
                 f"{float(cells[i][cell]):.3f} at RAS ({ras[0]:.0f}, {ras[1]:.0f}, {ras[2]:.0f}) mm")
        png = orthogonal_figure(vol.image, heat, vol.spacing, np.rint(centre).astype(int), box, text.strip(),
                                base.with_name(base.name + ".png"), lesion, title)
        results.append({"text": text.strip(), "png": str(png), "nifti": str(nifti), "cosine_min": lo,
                        "cosine_max": hi, "cosine_best": float(cells[i][cell]), "best_cell": list(cell), "best_box": [list(b) for b in box],
                        "best_ras_mm": [round(float(v), 2) for v in ras[:3]],
                        "best_input_voxel": [int(v) for v in np.rint(in_voxel)]})
    write_json_atomic(out_dir / f"{stem}.heatmap.json",
                      {"volume": str(volume), "checkpoint": str(checkpoint), "preprocessed": bool(preprocessed),
                       "grid": {"shape": list(vol.image.shape), "spacing_mm": np.round(vol.spacing, 4).tolist()},
                       "tiles": layout.n_tiles, "crop": list(layout.crop), "patch": list(layout.patch),
                       "mask": None if mask is None else str(mask), "sentences": results})
    return results
