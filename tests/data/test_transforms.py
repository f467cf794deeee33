"""Pre-training transform chains: shapes, padding fallbacks, flips, and seeded reproducibility."""
from __future__ import annotations

import pytest
import torch

from simcrop.data.transforms import (AIR, PadTo, after_crop, apply, crop_box, eval_transform, sample_seed,
                                     seed_transform, smaller_axes, train_transform)


def volume(shape=(40, 40, 20), seed=0):
    return torch.rand((1, *shape), generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_train_chain_gives_crop_shape_and_is_reproducible_per_seed():
    chain = train_transform((32, 32, 16))
    x = volume()
    outs = []
    for seed in (7, 7, 8):
        seed_transform(chain, seed)
        outs.append(apply(chain, x))
    assert outs[0].shape == (1, 32, 32, 16) and outs[0].dtype == torch.float32
    assert type(outs[0]) is torch.Tensor                    # no MONAI metadata to collate
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])
    assert outs[0].abs().max() <= 1.0 + 0.1 + 1e-6          # intensity shift at most 0.1


def test_flip_prob_one_flips_every_axis():
    x = volume((32, 32, 16))
    chain = train_transform((32, 32, 16), flip_prob=1.0, scale_crop=(1.0, 1.0), intensity_shift_prob=0.0)
    seed_transform(chain, 0)
    assert torch.equal(apply(chain, x), torch.flip(x, dims=(1, 2, 3)))


def test_intensity_shift_always_applied_is_a_constant_offset_within_range():
    x = volume((32, 32, 16))
    chain = train_transform((32, 32, 16), flip_prob=0.0, scale_crop=(1.0, 1.0), intensity_shift_prob=1.0)
    seed_transform(chain, 3)
    diff = apply(chain, x) - x
    assert torch.allclose(diff, diff.flatten()[0].expand_as(diff), atol=1e-6)
    assert 0 < diff.flatten()[0].abs() <= 0.1


def test_pad_reflects_when_possible_and_uses_air_when_volume_too_small():
    x = volume((30, 8, 6))
    out = PadTo((32, 32, 16))(x)
    assert out.shape == (1, 32, 32, 16)
    # x: 1 voxel each side, reflect: plane 0 mirrors plane 1 (z: 5 each side of 6, still reflect)
    assert torch.equal(out[:, 0, 12:20], PadTo((1, 1, 16))(x)[:, 1])
    # y: 12 voxels each side of 8 is too much for reflect -> air
    assert torch.all(out[:, :, :12] == AIR) and torch.all(out[:, :, 20:] == AIR)
    assert not torch.any(out[:, :, 12:20] == AIR)
    assert torch.all(PadTo((32, 32, 16), mode="constant")(volume((30, 32, 16)))[:, 0] == AIR)


def test_eval_chain_is_a_deterministic_centre_crop():
    x = volume((40, 36, 20))
    out = apply(eval_transform((32, 32, 16)), x)
    assert torch.equal(out, x[:, 4:36, 2:34, 2:18])
    small = apply(eval_transform((32, 32, 16)), volume((8, 40, 20)))
    assert small.shape == (1, 32, 32, 16)


def test_chain_on_volume_smaller_than_crop_does_not_crash():
    chain = train_transform((32, 32, 16))
    for seed in range(5):
        seed_transform(chain, seed)
        assert apply(chain, volume((10, 12, 6))).shape == (1, 32, 32, 16)


def test_helpers():
    assert smaller_axes((40, 20, 16), (32, 32, 16)) == ["y"]
    assert sample_seed(1, 0, 5) == sample_seed(1, 0, 5)
    assert len({sample_seed(1, e, i) for e in range(3) for i in range(3)}) == 9
    with pytest.raises(ValueError, match="scale_crop"):
        train_transform((32, 32, 16), scale_crop=(0.9, 0.5))
    with pytest.raises(ValueError, match="pad mode"):
        PadTo((4, 4, 4), mode="edge")


def test_label_channels_follow_the_image_and_leave_its_augmentation_unchanged():
    """Label maps carried as extra channels get the same crops and flips, no intensity shift, and the
    image channel comes out exactly as it does alone (same seed)."""
    image = torch.rand(1, 40, 36, 20) * 2 - 1
    labels = torch.randint(0, 4, (1, 40, 36, 20)).float()
    chain = train_transform((32, 32, 16), flip_prob=0.5, intensity_shift=0.1, intensity_shift_prob=1.0)
    seed_transform(chain, 7)
    alone = apply(chain, image)
    seed_transform(chain, 7)
    both = apply(chain, torch.cat([image, labels]))
    assert torch.equal(both[:1], alone)
    assert set(both[1].unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}          # labels, not shifted
    seed_transform(chain, 7)
    positions = torch.arange(40 * 36 * 20, dtype=torch.float32).reshape(1, 40, 36, 20)
    moved = apply(chain, torch.cat([image, positions]))[1]
    shift = alone[0] - image[0].flatten()[moved.long().flatten()].reshape(moved.shape)
    assert torch.allclose(shift, shift.flatten()[0].expand_as(shift), atol=1e-6)   # same voxels, one offset


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_crop_first_equals_the_chain_on_the_whole_volume_scaled_before_or_after(pad_mode):
    """crop_box + after_crop give apply(chain, volume) bit for bit, whether the box is scaled first (label
    maps ride along) or the pads and flips run on the stored int16 and the scale comes last (the cache
    path): volumes larger than the crop, smaller along an axis (reflect pad), under half of it (air pad,
    mirrored by a flip), for the train chain with every flip and shift likely, and for the eval chain."""
    import numpy as np

    from simcrop.data.preprocessed_io import scale_hu

    crop = (16, 12, 10)
    window = (-1000.0, 400.0)                        # not centred at 0: the scale subtracts, then multiplies

    def scale(array):
        return scale_hu(array, window)

    rng = np.random.default_rng(0)
    checked = {"air": 0, "reflect": 0, "flip": 0, "shift": 0}
    for shape in [(30, 20, 14), (13, 20, 14), (30, 5, 7), (4, 3, 14)]:
        stored = rng.integers(-1200, 1200, (1, *shape)).astype(np.int16)
        whole = scale(stored)
        chains = [train_transform(crop, flip_prob=0.5, intensity_shift_prob=0.5, pad_mode=pad_mode),
                  eval_transform(crop, pad_mode)]
        for chain in chains:
            for seed in range(12):
                seed_transform(chain, seed)
                expected = apply(chain, whole)
                for region, how in ((None, "stored"), ("scaled", "scaled")):
                    seed_transform(chain, seed)
                    box = crop_box(chain, shape)
                    part = stored[(slice(None), *box)]
                    got = (after_crop(chain, part, scale) if how == "stored"
                           else after_crop(chain, scale(part)))
                    assert got.dtype == torch.float32 and got.shape == (1, *crop)
                    assert torch.equal(got, expected), (shape, pad_mode, seed, how)
                    assert np.array_equal(part, stored[(slice(None), *box)])      # the region is not modified
                flips = [t for t in chain.transforms if type(t).__name__ == "RandFlip" and t._do_transform]
                checked["flip"] += bool(flips)
                checked["shift"] += bool(len(chain.transforms) > 2 and chain.transforms[-1].transform._do_transform)
                widths = chain.transforms[0 if chain is chains[1] else 1].widths(part.shape[1:])
                checked["air"] += any((b or a) and not r for b, a, r in widths)
                checked["reflect"] += any((b or a) and r for b, a, r in widths)
    if pad_mode == "constant":
        assert checked.pop("reflect") == 0
    assert all(checked.values()), checked                # every case above was met at least once
