"""Masked image modelling: masking, decoder shapes, masked-only loss, and a short overfit run."""
from __future__ import annotations

import pytest
import torch

from simcrop.model.mae import MAEDecoder, MaskedAutoencoder3D, build_mae, random_masking
from simcrop.model.vit3d import build_vit

IMG, PATCH = (32, 32, 16), (16, 16, 8)          # 8 patches of 2048 voxels


def _mae(norm_pix_loss=False, seed=0) -> MaskedAutoencoder3D:
    torch.manual_seed(seed)
    vit = build_vit(dict(embed_dim=48, depth=2, num_heads=3), img_size=IMG, patch_size=PATCH)
    return build_mae(vit, decoder_dim=36, decoder_depth=1, decoder_heads=3, norm_pix_loss=norm_pix_loss)


def _ct(b=2, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, *IMG, generator=g) * 2 - 1


# --- masking ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, ratio", [(8, 0.75), (64, 0.75), (2744, 0.75), (7, 0.5), (10, 0.0)])
def test_masking_keeps_exact_count(n, ratio):
    ids_keep, mask, ids_restore = random_masking(torch.zeros(3, n, 4), ratio, torch.Generator().manual_seed(0))
    keep = int(n * (1 - ratio))
    assert ids_keep.shape == (3, keep) and mask.shape == (3, n) and ids_restore.shape == (3, n)
    assert torch.all(mask.sum(1) == n - keep)
    assert torch.all(torch.gather(mask, 1, ids_keep) == 0)       # kept patches are the visible ones


def test_masking_differs_per_sample_and_is_reproducible():
    ids_keep, mask, _ = random_masking(torch.zeros(4, 64), 0.75, torch.Generator().manual_seed(1))
    assert len({tuple(m.tolist()) for m in mask}) == 4
    again, _, _ = random_masking(torch.zeros(4, 64), 0.75, torch.Generator().manual_seed(1))
    assert torch.equal(ids_keep, again)


def test_ids_restore_inverts_the_shuffle():
    x = torch.randn(3, 16, 5)
    ids_keep, _, ids_restore = random_masking(x, 0.75, torch.Generator().manual_seed(2))
    ids_shuffle = torch.argsort(ids_restore, dim=1)
    assert torch.equal(ids_shuffle[:, :4], ids_keep)
    shuffled = torch.gather(x, 1, ids_shuffle[..., None].expand(-1, -1, 5))
    torch.testing.assert_close(torch.gather(shuffled, 1, ids_restore[..., None].expand(-1, -1, 5)), x)


@pytest.mark.parametrize("ratio", [-0.1, 1.0])
def test_masking_rejects_bad_ratio(ratio):
    with pytest.raises(ValueError, match="mask_ratio"):
        random_masking(torch.zeros(1, 8), ratio)


def test_masking_rejects_ratio_that_keeps_nothing():
    with pytest.raises(ValueError, match="keeps no patch"):
        random_masking(torch.zeros(1, 8), 0.9)


# --- model --------------------------------------------------------------------------------------

def test_forward_outputs():
    mae, x = _mae().eval(), _ct()
    out = mae(x, generator=torch.Generator().manual_seed(0))
    assert out["pred"].shape == (2, 8, 2048) and out["mask"].shape == (2, 8)
    assert out["latent"].shape == (2, 1 + 2, 48) and out["ids_keep"].shape == (2, 2)
    assert out["ids_restore"].shape == (2, 8) and out["loss"].ndim == 0
    assert torch.all(out["mask"].sum(1) == 6)
    # latent[:, 1:] are exactly the encoder's tokens for the visible patches, in ids_keep order
    enc = mae.encoder.forward_features(x, ids_keep=out["ids_keep"])
    torch.testing.assert_close(out["latent"], enc)


def test_loss_counts_only_masked_patches():
    mae, x = _mae(), _ct()
    g = torch.Generator().manual_seed(3)
    out = mae(x, generator=g)
    pred, mask = out["pred"].detach(), out["mask"]
    visible = (mask == 0)[..., None]
    base = mae.forward_loss(x, pred, mask)
    torch.testing.assert_close(mae.forward_loss(x, torch.where(visible, pred + 5.0, pred), mask), base)
    assert not torch.allclose(mae.forward_loss(x, torch.where(visible, pred, pred + 5.0), mask), base)
    # equals the plain MSE over the voxels of masked patches
    voxel_mask = mae.encoder.unpatchify(mask[..., None].expand_as(pred)).bool()
    manual = ((mae.encoder.unpatchify(pred) - x) ** 2)[voxel_mask].mean()
    torch.testing.assert_close(base, manual)


def test_norm_pix_loss_is_masked_only_too():
    mae, x = _mae(norm_pix_loss=True), _ct()
    out = mae(x, generator=torch.Generator().manual_seed(4))
    pred, mask = out["pred"].detach(), out["mask"]
    shifted = torch.where((mask == 0)[..., None], pred - 3.0, pred)
    torch.testing.assert_close(mae.forward_loss(x, shifted, mask), mae.forward_loss(x, pred, mask))


def test_gradients_reach_encoder_not_pos_tables():
    mae = _mae()
    mae(_ct())["loss"].backward()
    assert mae.encoder.patch_embed.proj.weight.grad is not None
    assert mae.decoder.mask_token.grad is not None
    assert all(p.requires_grad for p in mae.parameters())
    assert "encoder.pos_embed" in mae.state_dict() and "decoder.pos_embed" in mae.state_dict()


def test_mismatched_decoder_is_rejected():
    vit = build_vit(dict(embed_dim=48, depth=1, num_heads=3), img_size=IMG, patch_size=PATCH)
    with pytest.raises(ValueError, match="grid"):
        MaskedAutoencoder3D(vit, MAEDecoder((2, 2, 4), 48, 36, 1, 3, 2048))
    with pytest.raises(ValueError, match="voxels"):
        MaskedAutoencoder3D(vit, MAEDecoder((2, 2, 2), 48, 36, 1, 3, 1024))


def test_overfits_a_fixed_batch():
    mae, x = _mae(seed=1), _ct(2, seed=5)
    opt = torch.optim.AdamW(mae.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.05)
    losses = []
    for _ in range(40):
        out = mae(x, generator=torch.Generator().manual_seed(0))   # same mask every step
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.6 * losses[0], losses       # ~0.37 -> ~0.14 when written
