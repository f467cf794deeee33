"""Preprocessed volumes and masks (the output of `simcrop preprocess`) in either `preprocess.format`: the
`.b2nd` training cache or NIfTI. One reader, `read_preprocessed` / `open_preprocessed` (the format from the
file suffix; a box decodes only that part of the cache), one writer, `write_preprocessed`, and one HU scale,
`scale_hu`, so every consumer (training, probe, segmentation, features, figures) sees the same inputs.
"""
from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from simcrop.data.volume_io import native_byte_order, write_nifti
from simcrop.io import atomic_path
from simcrop.layout import volume_format

# The one reader of a preprocessed volume: every consumer (training, probe, segmentation, features) scales
# HU the same way. The window is `preprocess.hu_window`, the one the volumes were clipped to; the scale maps
# it linearly onto [-1, 1]. With the default [-1000, 1000] this is HU / 1000 (air = -1, `transforms.AIR`).
DEFAULT_HU_WINDOW = (-1000.0, 1000.0)          # config.PreprocessConfig.hu_window's default


def hu_scale(hu_window=DEFAULT_HU_WINDOW) -> tuple[float, float, float, float]:
    """(lo, hi, centre, half-width) of a window; raises on a reversed or empty one."""
    lo, hi = (float(v) for v in hu_window)
    if not lo < hi:
        raise ValueError(f"hu_window {list(hu_window)} is reversed or empty")
    return lo, hi, (lo + hi) / 2.0, (hi - lo) / 2.0


# The training cache (preprocess.format: b2nd): one blosc2 NDArray file per volume or mask. int16 (masks: their
# label dtype), compressed by `preprocess.cache_codec` after a byte shuffle (CACHE_FILTER) in chunks of
# CACHE_CHUNKS split into blocks of CACHE_BLOCKS voxels (clipped to the shape): a read of a box decompresses
# only the blocks under it (nnU-Net v2 stores its preprocessed data the same way: blosc2 with zstd). Byte
# shuffle rather than bitshuffle: on int16 HU it gave smaller files (real 512 x 512 x 30 chest CT: 6.9 MB vs
# 8.1 MB, gzip-1 NIfTI 9.5 MB) and faster decoding (a ViT-B box of the benchmark volume: 7.5 vs 8.9 ms).
# The codec: the loader's cost is mostly decompression (the crop covers most of the volume), and LZ4HC
# decodes a ViT-B box 1.9x as fast as zstd for 15-22 % more bytes on real chest CT (README, Benchmarks).
# The geometry rides in the file's own variable-length metadata (`vlmeta`): affine, spacing, source, the
# stored values' [min, max] (`range`: a reader whose window holds it skips the clip) and a
# format version, so one atomic rename publishes the voxels and their geometry
# together and no sidecar can go missing or disagree; `simcrop export-volume` writes it back as NIfTI.
CACHE_CHUNKS = (64, 64, 64)        # 512 KiB of int16: a ViT-B crop (224 x 224 x 112) meets 4-5 x 4-5 x 2-3
CACHE_BLOCKS = (32, 32, 32)        # 64 KiB, the unit of decompression: a box over-reads < 1 block per face
CACHE_FILTER = "SHUFFLE"           # blosc2.Filter name (BITSHUFFLE: see above)
CACHE_CODECS = ("lz4hc", "zstd", "lz4")   # preprocess.cache_codec (blosc2.Codec names, lower case); first: default
CACHE_VERSION = 1
READ_THREADS = 1                   # one decompression thread per reader: DataLoader workers are the parallelism


def cache_layout(shape) -> tuple[tuple, tuple]:
    """(chunks, blocks) of a cache file of this shape: CACHE_CHUNKS and CACHE_BLOCKS clipped to it."""
    chunks = tuple(max(1, min(int(n), c)) for n, c in zip(shape, CACHE_CHUNKS))
    return chunks, tuple(min(c, b) for c, b in zip(chunks, CACHE_BLOCKS))


def write_cache(path, array: np.ndarray, affine: np.ndarray, compress_level: int = 1, source: str = "",
                chunks=None, blocks=None, codec: str = CACHE_CODECS[0]) -> None:
    """Write (X, Y, Z) `array` with RAS `affine` atomically as a blosc2 NDArray (`.b2nd`, the training cache).
    `chunks`/`blocks` default to `cache_layout`; `codec` is one of CACHE_CODECS, `compress_level` its level
    (0: stored uncompressed). Any codec reads back the same way: blosc2 files say how they were written."""
    import blosc2

    if codec not in CACHE_CODECS:
        raise ValueError(f"{path}: cache codec must be one of {CACHE_CODECS}; got {codec!r}")
    array = np.ascontiguousarray(native_byte_order(np.asarray(array)))
    if array.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D array, got shape {array.shape}")
    default_chunks, default_blocks = cache_layout(array.shape)
    cparams = blosc2.CParams(codec=blosc2.Codec[codec.upper()], clevel=int(compress_level), nthreads=1,
                             filters=[getattr(blosc2.Filter, CACHE_FILTER)], filters_meta=[0])
    affine = np.asarray(affine, dtype=np.float64)
    with atomic_path(path) as tmp:
        stored = blosc2.asarray(array, urlpath=str(tmp), mode="w", cparams=cparams,
                                chunks=tuple(chunks or default_chunks), blocks=tuple(blocks or default_blocks))
        stored.schunk.vlmeta["simcrop"] = {
            "version": CACHE_VERSION, "affine": affine.tolist(),
            "spacing": np.sqrt((affine[:3, :3] ** 2).sum(axis=0)).tolist(), "source": str(source),
            "range": [array.min().item(), array.max().item()] if array.size else None}
        del stored                                     # closed before the rename


def _open_cache(path):
    """(blosc2 NDArray, its simcrop metadata); ValueError naming the file when it is not a cache file."""
    import blosc2

    try:
        array = blosc2.open(str(path), mode="r", dparams=blosc2.DParams(nthreads=READ_THREADS))
        meta = array.schunk.vlmeta["simcrop"] if "simcrop" in array.schunk.vlmeta else None
    except Exception as err:                           # blosc2 says RuntimeError "... returned NULL"
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: preprocessed volume not found (run `simcrop preprocess`)") from err
        raise ValueError(f"{path}: unreadable training cache ({type(err).__name__}: {err}); "
                         "rerun `simcrop preprocess`") from err
    if not isinstance(meta, dict) or "affine" not in meta or not hasattr(array, "shape"):
        raise ValueError(f"{path}: not a simcrop training cache (no affine in its metadata)")
    return array, meta


def _is_ras(affine: np.ndarray) -> bool:
    m = affine[:3, :3]
    if not np.count_nonzero(m - np.diag(np.diag(m))):           # the usual preprocess output: a diagonal
        return bool(np.all(np.diag(m) > 0))
    return nib.aff2axcodes(affine) == ("R", "A", "S")


class PreprocessedFile:
    """A preprocessed volume or mask, opened (`.b2nd` cache or NIfTI, by suffix): its header now (shape,
    dtype, affine, spacing, source; `value_range`, the stored [min, max] a cache file records, else None),
    voxels only on `read`, so a caller can pick its box from the shape first and decode only that."""

    def __init__(self, path):
        self.path = Path(path)
        self.format = volume_format(path)
        if self.format == "b2nd":
            self._stored, meta = _open_cache(path)
            self.shape = tuple(int(n) for n in self._stored.shape)
            self.dtype = np.dtype(self._stored.dtype)
            self.affine = np.asarray(meta["affine"], dtype=np.float64)
            self.source = str(meta.get("source", ""))
            self.value_range = tuple(meta["range"]) if meta.get("range") is not None else None
        else:
            self._stored = nib.load(str(path))
            self.shape = tuple(int(n) for n in self._stored.shape)
            self.dtype = self._stored.get_data_dtype()
            self.affine = np.asarray(self._stored.affine, dtype=np.float64)
            self.source = str(path)
            self.value_range = None

    def within(self, hu_window) -> bool:
        """True when every stored value lies inside `hu_window` (known from the cache's recorded range), so
        `scale_hu` may skip its clip: the same floats, one pass fewer. False when unknown (NIfTI)."""
        lo, hi, _, _ = hu_scale(hu_window)
        return self.value_range is not None and lo <= self.value_range[0] and self.value_range[1] <= hi

    @property
    def spacing(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    def read(self, box=None) -> np.ndarray:
        """(X, Y, Z) as stored (volumes: int16 HU, already clipped to the window; masks: labels).

        box: three slices; only that part is returned, and from the cache only the blocks under it are
        decoded (a NIfTI is decoded whole, then cut). ValueError unless the volume is 3-D and RAS, the
        preprocess contract, or when the file is unreadable.
        """
        if len(self.shape) != 3:
            raise ValueError(f"{self.path}: expected a 3D volume, got shape {self.shape}")
        if not _is_ras(self.affine):
            raise ValueError(f"{self.path}: expected RAS orientation (run `simcrop preprocess`), got "
                             f"{''.join(nib.aff2axcodes(self.affine))}")
        if box is not None:
            box = tuple(box)
            if len(box) != 3 or any(not isinstance(b, slice) or b.step not in (None, 1) for b in box):
                raise ValueError(f"{self.path}: a box is 3 slices with step 1, got {box}")
        if self.format == "nifti":
            array = np.asanyarray(self._stored.dataobj)    # int16 as stored (no scaling in preprocess output)
            return array if box is None else array[box]
        try:
            return native_byte_order(np.asarray(self._stored[box if box is not None else (slice(None),) * 3]))
        except Exception as err:
            raise ValueError(f"{self.path}: unreadable training cache ({type(err).__name__}: {err}); "
                             "rerun `simcrop preprocess`") from err


def open_preprocessed(path) -> PreprocessedFile:
    """Open a preprocessed volume or mask of either format (header only; `.read(box)` decodes)."""
    return path if isinstance(path, PreprocessedFile) else PreprocessedFile(path)


def read_preprocessed(path, box=None) -> np.ndarray:
    """The one reader of preprocessed volumes and masks, either format (the suffix says which): (X, Y, Z) as
    stored; `box` (three slices): only that part, from the cache only the blocks under it decoded. Raises
    ValueError unless the volume is 3-D and RAS, or when the file is unreadable. See PreprocessedFile."""
    return open_preprocessed(path).read(box)


def write_preprocessed(path, array: np.ndarray, affine: np.ndarray, compress_level: int = 1,
                       source: str = "", codec: str = CACHE_CODECS[0]) -> None:
    """Write a preprocessed volume or mask atomically in the format its name says (`.b2nd` | `.nii.gz`);
    `codec` (CACHE_CODECS) for the cache, gzip for NIfTI."""
    if volume_format(path) == "b2nd":
        write_cache(path, array, affine, compress_level, source=source, codec=codec)
    else:
        write_nifti(path, array, affine, compress_level)


def export_nifti(path, out, compress_level: int = 6) -> Path:
    """Any preprocessed volume or mask → NIfTI (`out`, gzip when it ends .gz) with its affine, atomically,
    for 3D Slicer / ITK-SNAP. Returns `out`."""
    stored = open_preprocessed(path)
    write_nifti(out, stored.read(), stored.affine, compress_level)
    return Path(out)


def scale_hu(array: np.ndarray, hu_window=DEFAULT_HU_WINDOW, clip: bool = True):
    """HU (X, Y, Z) → float32 tensor in [-1, 1]: clipped to the window, centred, / half-width (the
    encoder's input scale). Same operations as before the window was configurable (clamp, * 1 / 1000)
    so the default window gives bit-identical inputs. `array` is never modified. clip=False: the caller
    knows every value lies inside the window (`PreprocessedFile.within`), where the clip changes nothing."""
    import torch

    lo, hi, centre, half = hu_scale(hu_window)
    x = torch.from_numpy(np.ascontiguousarray(array)).to(torch.float32, copy=True)
    if clip:
        x.clamp_(lo, hi)
    if centre:
        x.sub_(centre)
    return x.mul_(1.0 / half)


def load_preprocessed(path, hu_window=DEFAULT_HU_WINDOW, box=None):
    """Read a preprocessed volume (a path of either format, or an open PreprocessedFile; `box`: only that
    part) → (1, X, Y, Z) float32 in [-1, 1] (`scale_hu` of `hu_window`)."""
    stored = open_preprocessed(path)
    return scale_hu(stored.read(box), hu_window, clip=not stored.within(hu_window)).unsqueeze(0)
