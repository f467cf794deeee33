"""MONAI transform chains for pre-training crops (method.md §4).

Input and output: (C, X, Y, Z) float32, channel 0 scaled HU in [-1, 1], RAS; further channels (label
maps carried along for training diagnostics) get the same crops, pads and flips, and no intensity shift.
Training chain: random scale crop
(each axis 0.8-1.0 of the volume) -> pad to the crop size -> random crop of the crop size -> flip each
axis with p = flip_prob -> intensity shift by U(-0.1, 0.1) with p = 0.1. Evaluation chain: pad, then
centre crop (deterministic).

Padding: `reflect` (the authors' choice) needs the pad on each side to be smaller than the volume
along that axis; where it is not (a volume under about half the crop), that axis is padded with air
(-1.0, i.e. -1000 HU) instead of failing. The dataset warns once per such volume.

Randomness: every random transform draws from its own `numpy.random.RandomState`, set per sample by
`seed_transform(chain, seed)` - so a sample's augmentation depends only on the seed the dataset
derives from (seed, epoch, index), not on workers, ranks or where a resumed run starts.

Crop first, read after: the crops draw their numbers from the volume's shape alone, so `crop_box(chain,
shape)` (after seeding) says which box of the stored volume the chain keeps, and `after_crop(chain,
region)` runs the rest (pad, flips, intensity shift) on just that box. The dataset reads only that box
from the training cache; the result equals `apply(chain, volume)` bit for bit, same seed, same numbers.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import (CenterSpatialCrop, Compose, RandFlip, Randomizable, RandScaleCrop,
                              RandShiftIntensity, RandSpatialCrop)

AIR = -1.0          # -1000 HU after scaling
PAD_MODES = ("reflect", "constant")


class PadTo:
    """Pad (C, X, Y, Z) symmetrically up to at least `size`; reflect where possible, else air."""

    def __init__(self, size: Sequence[int], mode: str = "reflect", value: float = AIR):
        if mode not in PAD_MODES:
            raise ValueError(f"pad mode must be one of {PAD_MODES}; got {mode!r}")
        self.size, self.mode, self.value = tuple(int(s) for s in size), mode, value

    def widths(self, shape: Sequence[int]) -> list[tuple[int, int, bool]]:
        """Per spatial axis of a (X, Y, Z) `shape`: (before, after, reflect); reflect False: air."""
        out = []
        for dim, want in zip(shape, self.size):
            extra = max(int(want) - int(dim), 0)
            before, after = extra // 2, extra - extra // 2
            out.append((before, after, self.mode == "reflect" and max(before, after) < dim))
        return out

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        img = torch.as_tensor(img)
        widths = self.widths(img.shape[1:])
        if not any(before or after for before, after, _ in widths):
            return img
        # pads along different axes commute, so each kind is one call (one copy) for all its axes
        out = img.unsqueeze(0)                      # reflect pads (N, C, X, Y, Z)
        reflect = _torch_pads([(b, a) if r else (0, 0) for b, a, r in widths])
        constant = _torch_pads([(0, 0) if r else (b, a) for b, a, r in widths])
        if any(reflect):
            out = F.pad(out, reflect, mode="reflect")
        if any(constant):
            out = F.pad(out, constant, mode="constant", value=self.value)
        return out.squeeze(0)


def _torch_pads(widths) -> list[int]:
    """[(before, after)] per axis, first axis first → F.pad's order (last axis first)."""
    return [n for before_after in reversed(widths) for n in before_after]


class ImageChannelOnly(Randomizable):
    """Apply an intensity transform to channel 0 (the image) only. It forwards the seed Compose gives it,
    so the chain draws the same numbers with or without extra channels: carrying label maps along does
    not change the image's augmentation."""

    def __init__(self, transform):
        self.transform = transform

    def set_random_state(self, seed=None, state=None):
        self.transform.set_random_state(seed=seed, state=state)
        return self

    def randomize(self, data) -> None:        # the wrapped transform draws its own numbers
        pass

    def __call__(self, img):
        if img.shape[0] == 1:
            return self.transform(img)
        image = self.transform(img[:1])
        image = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
        rest = img[1:].as_tensor() if hasattr(img, "as_tensor") else img[1:]
        return torch.cat([image, rest.to(image.dtype)])


def smaller_axes(shape: Sequence[int], size: Sequence[int]) -> list[str]:
    """Names of the axes ('x', 'y', 'z') along which `shape` (X, Y, Z) is smaller than `size`."""
    return [axis for axis, s, c in zip("xyz", shape, size) if s < c]


def train_transform(crop_size: Sequence[int], flip_prob: float = 0.2, scale_crop: Sequence[float] = (0.8, 1.0),
                    intensity_shift: float = 0.1, intensity_shift_prob: float = 0.1,
                    pad_mode: str = "reflect") -> Compose:
    """Random augmentation chain: (1, X, Y, Z) -> (1, *crop_size), float32."""
    lo, hi = (float(s) for s in scale_crop)
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"scale_crop must satisfy 0 < min <= max <= 1; got {list(scale_crop)}")
    if not 0.0 <= flip_prob <= 1.0 or not 0.0 <= intensity_shift_prob <= 1.0:
        raise ValueError(f"probabilities must lie in [0, 1]; got flip_prob {flip_prob}, "
                         f"intensity_shift_prob {intensity_shift_prob}")
    crop = tuple(int(s) for s in crop_size)
    return Compose([
        RandScaleCrop(roi_scale=lo, max_roi_scale=hi, random_center=True, random_size=True),
        PadTo(crop, pad_mode),
        RandSpatialCrop(crop, random_center=True, random_size=False),
        *(RandFlip(prob=flip_prob, spatial_axis=axis) for axis in range(3)),
        ImageChannelOnly(RandShiftIntensity(offsets=float(intensity_shift), prob=intensity_shift_prob)),
    ])


def eval_transform(crop_size: Sequence[int], pad_mode: str = "reflect") -> Compose:
    """Deterministic chain: pad to at least crop_size, then centre crop -> (1, *crop_size)."""
    crop = tuple(int(s) for s in crop_size)
    return Compose([PadTo(crop, pad_mode), CenterSpatialCrop(crop)])


def seed_transform(chain: Compose, seed: int) -> None:
    """Reset every random transform in `chain` from one integer seed (MONAI Randomizable API)."""
    chain.set_random_state(state=np.random.RandomState(seed % (2 ** 32)))


def sample_seed(seed: int, epoch: int, index: int, stream: int = 0) -> int:
    """A well-mixed 32-bit seed for one sample, from (seed, epoch, index); `stream` 0 is its
    augmentation, other streams are independent draws for the same sample (1: its report's MLM mask)."""
    entropy = [int(seed), int(epoch), int(index)] + ([int(stream)] if stream else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


CROPS = (RandSpatialCrop, CenterSpatialCrop)          # RandScaleCrop is a RandSpatialCrop


def crop_box(chain: Compose, shape: Sequence[int]) -> tuple[slice, slice, slice]:
    """The box of a (X, Y, Z) volume of `shape` whose voxels `chain` (train_transform or eval_transform,
    seeded as for `apply`) keeps: its crops draw their random numbers now, from the shapes they would see,
    and `after_crop(chain, region)` then finishes the sample from that box alone.

    Along an axis the chain pads, the crop after the pad keeps the whole padded extent (PadTo pads to
    exactly the crop), so the box there is what the crop before the pad kept; elsewhere it is the final
    crop. Either way PadTo on the box makes the same pad the chain made (checked: ValueError otherwise).
    """
    # per axis: the image is a window of `length` voxels, of which [data0, data0 + count) are the stored
    # voxels [stored0, stored0 + count); the rest is padding
    length, data0, stored0, count = [int(n) for n in shape], [0] * len(shape), [0] * len(shape), [int(n) for n in shape]
    pad = None
    for t in chain.transforms:
        if isinstance(t, PadTo):
            pad = t
            for axis, want in enumerate(t.size):
                extra = max(want - length[axis], 0)
                length[axis] += extra
                data0[axis] += extra // 2
        elif isinstance(t, CROPS):
            if isinstance(t, RandSpatialCrop):
                t.randomize(length)                    # RandScaleCrop: sets its ROI from `length` first
                slices = t._slices if t.random_center else CenterSpatialCrop(t._size).compute_slices(length)
            else:
                slices = t.compute_slices(length)
            for axis, cut in enumerate(slices):
                lo = min(cut.start or 0, length[axis])
                hi = min(length[axis] if cut.stop is None else cut.stop, length[axis])
                keep0, keep1 = max(data0[axis], lo), min(data0[axis] + count[axis], hi)
                stored0[axis] += max(lo - data0[axis], 0)
                count[axis] = max(keep1 - keep0, 0)
                data0[axis], length[axis] = keep0 - lo, max(hi - lo, 0)
    box = tuple(slice(a, a + n) for a, n in zip(stored0, count))
    redo = [n if pad is None else max(n, want) for n, want in zip(count, pad.size if pad else count)]
    before = [0 if pad is None else (r - n) // 2 for r, n in zip(redo, count)]
    if redo != length or before != data0:
        raise ValueError(f"crop_box: this chain's pads and crops cannot be replayed on the box {box} "
                         f"(window {length}, data at {data0}); run apply() on the whole volume instead")
    return box


def after_crop(chain: Compose, region, scale=None) -> torch.Tensor:
    """Finish a sample from the box `crop_box` gave, (C, *box): the chain's pad, then its transforms other
    than crops in order, each drawing the numbers the seeded chain gives it. Returns what `apply(chain,
    volume)` returns, bit for bit; the flips run as one flip and the intensity shift as one add (the same
    arithmetic with fewer copies of a ViT-B crop), any other transform as it is. `region` is not modified.

    scale: when given, `region` holds stored values (the cache's int16 HU) and `scale(array)` maps them
    elementwise to the chain's input (a float32 tensor, `preprocessed_io.scale_hu`). Reflect pads and flips
    only move voxels, so they run on the stored values (half the bytes of float32) and `scale` runs once, on
    the finished box; air pads follow the scale, in the chain's units. Same result as scaling first.
    """
    if scale is not None:
        if _moves_only(chain):
            return _after_crop_stored(chain, region, scale)
        region = scale(region)
    out = torch.as_tensor(region)
    for t in chain.transforms:
        if isinstance(t, PadTo):
            out = t(out)
    flips, shift = [], 0.0

    def settle(x):                                      # the pending flips, then the pending shift
        nonlocal flips, shift
        odd = _odd_axes(flips)
        if odd:
            x = torch.flip(x, dims=odd)
        if shift:                                       # MONAI ShiftIntensity: img + offset, channel 0 only
            x = x + shift if x.shape[0] == 1 else torch.cat([x[:1] + shift, x[1:]])
        flips, shift = [], 0.0
        return x

    for t in chain.transforms:
        if isinstance(t, (PadTo, *CROPS)):
            continue
        if isinstance(t, RandFlip):
            flips.extend(_draw_flip(t, out.ndim - 1))
        elif _is_image_shift(t):
            out = settle(out) if shift else out
            shift = _draw_shift(t)
        else:                                           # anything else: as the chain would run it
            out = t(settle(out))
    out = settle(out)
    if hasattr(out, "as_tensor"):
        out = out.as_tensor()
    return torch.as_tensor(out, dtype=torch.float32).contiguous()


def _is_image_shift(t) -> bool:
    return (isinstance(t, ImageChannelOnly) and isinstance(t.transform, RandShiftIntensity)
            and not t.transform.channel_wise)


def _moves_only(chain: Compose) -> bool:
    """True when the chain is at most one PadTo, crops, flips and image intensity shifts (the training and
    evaluation chains): then `_after_crop_stored` can run it on stored values."""
    steps = chain.transforms
    return (sum(isinstance(t, PadTo) for t in steps) <= 1
            and all(isinstance(t, (PadTo, RandFlip, *CROPS)) or _is_image_shift(t) for t in steps))


def _draw_flip(t: RandFlip, spatial_dims: int) -> list[int]:
    """The tensor dims (1-based: after the channel) a seeded RandFlip flips this time; [] when it does not."""
    t.randomize(None)
    if not t._do_transform:
        return []
    axes = t.flipper.spatial_axis
    axes = range(spatial_dims) if axes is None else ([axes] if isinstance(axes, int) else axes)
    return [int(a) % spatial_dims + 1 for a in axes]


def _draw_shift(t: ImageChannelOnly) -> float:
    t.transform.randomize(None)
    return float(t.transform._offset) if t.transform._do_transform else 0.0


def _odd_axes(flips: list[int]) -> list[int]:
    return sorted(d for d in set(flips) if flips.count(d) % 2)


def _after_crop_stored(chain: Compose, region, scale) -> torch.Tensor:
    """after_crop for a chain of moves (`_moves_only`) on stored values: reflect pads and flips on them (copies
    of int16), then the one scale, then air pads (mirrored along flipped axes: pad-then-flip equals
    flip-then-mirrored-pad), then the shifts, in place, in the chain's arithmetic."""
    stored = torch.as_tensor(np.asarray(region))
    pad = next((t for t in chain.transforms if isinstance(t, PadTo)), None)
    widths = pad.widths(stored.shape[1:]) if pad is not None else []
    flips, shifts = [], []
    for t in chain.transforms:
        if isinstance(t, RandFlip):
            flips.extend(_draw_flip(t, stored.ndim - 1))
        elif _is_image_shift(t):
            shifts.append(_draw_shift(t))
    reflect = _torch_pads([(b, a) if r else (0, 0) for b, a, r in widths])
    if any(reflect):
        stored = F.pad(stored.unsqueeze(0), reflect, mode="reflect").squeeze(0)
    odd = _odd_axes(flips)
    if odd:
        stored = torch.flip(stored, dims=odd)
    out = scale(stored.numpy())
    air = [(0, 0) if r else ((a, b) if axis + 1 in odd else (b, a)) for axis, (b, a, r) in enumerate(widths)]
    if any(b or a for b, a in air):
        out = F.pad(out.unsqueeze(0), _torch_pads(air), mode="constant", value=pad.value).squeeze(0)
    for shift in shifts:                                # MONAI ShiftIntensity: img + offset, channel 0 only
        if shift:
            out[:1].add_(shift)
    return torch.as_tensor(out, dtype=torch.float32).contiguous()


def apply(chain: Compose, img: torch.Tensor) -> torch.Tensor:
    """Run the chain and return a plain contiguous float32 tensor (no MONAI metadata to collate)."""
    out = chain(img)
    if hasattr(out, "as_tensor"):
        out = out.as_tensor()
    return torch.as_tensor(out, dtype=torch.float32).contiguous()
