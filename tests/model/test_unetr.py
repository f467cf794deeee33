"""UNETR on our ViT: shapes at input resolution for anisotropic and isotropic patches, skip choice,
and the pre-trained encoder weights arriving unchanged."""
from __future__ import annotations

import pytest
import torch

from simcrop.config import ModelConfig
from simcrop.model.pos_embed import build_pos_embed
from simcrop.model.unetr import UNETR, last_upsample, skip_indices_for
from simcrop.model.vit3d import build_vit
from simcrop.evaluate.probe_features import build_encoder

TINY = {"embed_dim": 48, "depth": 2, "num_heads": 3}


@pytest.mark.parametrize("img, patch", [((32, 32, 16), (16, 16, 8)), ((32, 32, 32), (16, 16, 16)),
                                        ((16, 32, 16), (8, 16, 8))])
def test_output_has_input_shape(img, patch):
    torch.manual_seed(0)
    model = UNETR(build_vit(TINY, img_size=img, patch_size=patch), out_channels=3, feature_size=8)
    x = torch.rand(2, 1, *img) * 2 - 1
    out = model(x)
    assert out.shape == (2, 3, *img)
    out.mean().backward()
    assert model.encoder.patch_embed.proj.weight.grad is not None     # the encoder is fine-tuned


def test_last_upsampling_follows_the_patch():
    assert last_upsample((16, 16, 8)) == (2, 2, 1)
    assert last_upsample((16, 16, 16)) == (2, 2, 2)
    model = UNETR(build_vit(TINY, img_size=(32, 32, 16), patch_size=(16, 16, 8)), 2, feature_size=8)
    assert tuple(model.decoder2.transp_conv.conv.stride) == (2, 2, 1)
    with pytest.raises(ValueError, match="patch sides of 8 or 16"):
        last_upsample((16, 16, 4))


def test_skip_indices_official_and_proportional():
    assert skip_indices_for(12) == (3, 6, 9)                         # official hidden_states_out[3, 6, 9]
    assert skip_indices_for(4) == (1, 2, 3)
    assert skip_indices_for(2) == (0, 1, 1)
    vit = build_vit(dict(TINY, depth=4), img_size=(32, 32, 16), patch_size=(16, 16, 8))
    assert UNETR(vit, 2, feature_size=8).skip_indices == (1, 2, 3)
    with pytest.raises(ValueError, match="outside"):
        UNETR(vit, 2, feature_size=8, skip_indices=(1, 2, 4))


def test_skips_are_the_named_hidden_states():
    torch.manual_seed(0)
    vit = build_vit(dict(TINY, depth=4), img_size=(32, 32, 16), patch_size=(16, 16, 8))
    model = UNETR(vit, 2, feature_size=8).eval()
    seen = []
    model.encoder2.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    x = torch.rand(1, 1, 32, 32, 16) * 2 - 1
    with torch.no_grad():
        model(x)
        expected = vit.get_intermediate_layers(x, (1,))[0][:, 1:]      # CLS dropped
    grid = seen[0].permute(0, 2, 3, 4, 1).reshape(1, -1, 48)          # (B, C, gh, gw, gd) -> token order
    torch.testing.assert_close(grid, expected)


@pytest.mark.parametrize("crop", [(32, 32, 16), (48, 32, 16)])
def test_loaded_encoder_equals_exported(tmp_path, crop):
    torch.manual_seed(1)
    cfg = ModelConfig(vit="vit_demo", img_size=[32, 32, 16], patch_size=[16, 16, 8])
    source = build_vit(TINY, img_size=(32, 32, 16), patch_size=(16, 16, 8))
    torch.save({"model": source.state_dict()}, tmp_path / "encoder.pt")
    encoder = build_encoder(cfg, crop, tmp_path / "encoder.pt", vit_overrides=TINY, seed=7)
    model = UNETR(encoder, 2, feature_size=8)
    got, want = model.encoder.state_dict(), source.state_dict()
    assert set(got) == set(want)
    for key in want:
        if key == "pos_embed" and crop != (32, 32, 16):
            assert got[key].shape[1] == 1 + (crop[0] // 16) * 2 * 2   # rebuilt for the larger grid
            continue
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)
    random = build_encoder(cfg, crop, None, vit_overrides=TINY, seed=7)
    assert not torch.equal(random.blocks[0].attn.qkv.weight, want["blocks.0.attn.qkv.weight"])


def test_official_vit_mode_runs_without_cls_on_the_legacy_table():
    """official_vit: patch tokens only, the depth-agnostic 2d_legacy table, a fresh final norm (what the
    official UNETR's ViT computes from our files); the CLS token takes no part and gets no gradient."""
    torch.manual_seed(0)
    vit = build_vit(TINY, img_size=(32, 32, 16), patch_size=(16, 16, 8))
    with torch.no_grad():
        vit.norm.weight.fill_(2.0)
    model = UNETR(vit, out_channels=3, feature_size=8, official_vit=True)
    assert vit.pos_embed_kind == "2d_legacy" and torch.equal(vit.norm.weight, torch.ones(48))
    assert torch.equal(vit.pos_embed, build_pos_embed("2d_legacy", vit.grid_size, 48))
    x = torch.rand(2, 1, 32, 32, 16) * 2 - 1
    out, hidden = model.encode(x)
    assert out.shape == (2, 8, 48) and hidden[0].shape == (2, 8, 48)
    logits = model(x)
    assert logits.shape == (2, 3, 32, 32, 16)
    logits.mean().backward()
    assert vit.cls_token.grad is None and vit.blocks[0].attn.qkv.weight.grad is not None
    assert UNETR(build_vit(TINY, img_size=(32, 32, 16)), 2, feature_size=8).official_vit is False
