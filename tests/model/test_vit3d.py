"""3D ViT encoder: shapes, patch layout, fixed position tables, timm key names, input contract."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from simcrop.model.pos_embed import build_pos_embed, legacy_2d, sincos_3d
from simcrop.model.vit3d import VIT_CONFIGS, VisionTransformer3D, build_vit, check_input

IMG, PATCH = (32, 32, 16), (16, 16, 8)          # a 2 x 2 x 2 grid of 2048-voxel patches
TINY = dict(embed_dim=48, depth=3, num_heads=3)


def _vit(**kw) -> VisionTransformer3D:
    torch.manual_seed(0)
    return build_vit(dict(TINY), img_size=kw.pop("img_size", IMG), patch_size=PATCH, **kw).eval()


def _ct(b=2, shape=IMG, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, *shape, generator=g) * 2 - 1


# --- shapes -------------------------------------------------------------------------------------

def test_shapes_and_grid():
    vit = _vit()
    assert vit.grid_size == (2, 2, 2) and vit.num_patches == 8 and vit.patch_voxels == 2048
    x = _ct()
    assert vit(x).shape == (2, 9, 48)
    ids = torch.tensor([[0, 5, 7], [3, 1, 2]])
    assert vit.forward_features(x, ids_keep=ids).shape == (2, 4, 48)
    out, hidden = vit.forward_features(x, return_hidden=True)
    assert len(hidden) == 3 and all(h.shape == (2, 9, 48) for h in hidden)
    torch.testing.assert_close(out, vit.norm(hidden[-1]))
    skips = vit.get_intermediate_layers(x, indices=(0, 2))
    torch.testing.assert_close(skips[1], hidden[2])
    with pytest.raises(ValueError, match="block index 3"):
        vit.get_intermediate_layers(x, indices=(3,))


def test_anisotropic_grid():
    vit = _vit(img_size=(48, 32, 32))
    assert vit.grid_size == (3, 2, 4)
    assert vit(_ct(1, (48, 32, 32))).shape == (1, 25, 48)


def test_positions_are_added_before_selection():
    """Encoding a permutation of all patches permutes the output: each token keeps its own position."""
    vit, x = _vit(), _ct()
    full = vit(x)
    perm = torch.stack([torch.randperm(8, generator=torch.Generator().manual_seed(s)) for s in (1, 2)])
    shuffled = vit.forward_features(x, ids_keep=perm)
    torch.testing.assert_close(shuffled[:, 0], full[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shuffled[:, 1:], torch.gather(full[:, 1:], 1, perm[..., None].expand(-1, -1, 48)),
                               atol=1e-5, rtol=1e-5)


def test_without_cls_token_only_patch_tokens_attend():
    """cls_token=False: the patch tokens alone, positions pos_embed[:, 1:], as the official UNETR's ViT runs."""
    vit, x = _vit(), _ct()
    out, hidden = vit.forward_features(x, return_hidden=True, cls_token=False)
    assert out.shape == (2, 8, 48) and len(hidden) == 3 and all(h.shape == (2, 8, 48) for h in hidden)
    with torch.no_grad():
        t = vit.patch_embed(x) + vit.pos_embed[:, 1:]
        for blk in vit.blocks:
            t = blk(t)
        torch.testing.assert_close(hidden[-1], t)
        torch.testing.assert_close(out, vit.norm(t))
        with_cls = vit(x)
    assert (with_cls[:, 1:] - out).abs().max() > 1e-3            # the CLS token changes every patch token
    ids = torch.tensor([[0, 5, 7], [3, 1, 2]])
    assert vit.forward_features(x, ids_keep=ids, cls_token=False).shape == (2, 3, 48)


# --- patch layout -------------------------------------------------------------------------------

def test_patchify_roundtrip_and_layout():
    vit = _vit(img_size=(48, 32, 32))
    x = torch.arange(48 * 32 * 32, dtype=torch.float32).reshape(1, 1, 48, 32, 32)
    patches = vit.patchify(x)
    assert patches.shape == (1, 3 * 2 * 4, 2048)
    torch.testing.assert_close(vit.unpatchify(patches), x)
    i, j, k = 2, 1, 3                                # token (i * gw + j) * gd + k holds that block
    block = x[0, 0, i * 16:(i + 1) * 16, j * 16:(j + 1) * 16, k * 8:(k + 1) * 8]
    torch.testing.assert_close(patches[0, (i * 2 + j) * 4 + k], block.reshape(-1))


def test_patch_embed_matches_official_per_patch_conv():
    """The official code cuts patches first and runs the same Conv3d on each; weights must mean the same."""
    vit, x = _vit(), _ct()
    w, b = vit.patch_embed.proj.weight, vit.patch_embed.proj.bias
    cut = vit.patchify(x).reshape(2 * 8, *PATCH, 1).permute(0, 4, 1, 2, 3)
    official = F.conv3d(cut, w, b, stride=PATCH).reshape(2, 8, 48)
    torch.testing.assert_close(vit.patch_embed(x), official, atol=1e-5, rtol=1e-5)


# --- position tables ----------------------------------------------------------------------------

GRID, DIM = (4, 5, 6), 96


def _row(i, j, k, grid=GRID):
    return (i * grid[1] + j) * grid[2] + k


def test_pos_embed_is_fixed_buffer_saved_in_state_dict():
    vit = _vit()
    assert "pos_embed" in vit.state_dict()
    assert "pos_embed" not in dict(vit.named_parameters()) and not vit.pos_embed.requires_grad
    assert vit.pos_embed.shape == (1, 9, 48)
    assert torch.all(vit.pos_embed[0, 0] == 0)                  # CLS row is zero, as in MAE
    before = vit.pos_embed.clone()
    opt = torch.optim.AdamW(vit.parameters(), lr=1e-2)
    vit.train()(_ct()).square().mean().backward()
    opt.step()
    torch.testing.assert_close(vit.pos_embed, before, atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["3d_sincos", "2d_legacy"])
def test_pos_table_range_and_cls_row(kind):
    table = build_pos_embed(kind, GRID, DIM)
    assert table.shape == (1, 1 + math.prod(GRID), DIM) and table.dtype == torch.float32
    assert torch.all(table[0, 0] == 0)
    assert table.abs().max() <= 1.0


def test_3d_sincos_rows_distinct_and_depth_aware():
    table = sincos_3d(GRID, DIM)
    dist = torch.cdist(table, table)
    assert dist[~torch.eye(len(table), dtype=torch.bool)].min() > 1e-3
    assert not torch.allclose(table[_row(1, 2, 0)], table[_row(1, 2, 3)])


def test_2d_legacy_ignores_depth_but_not_h_w():
    table = legacy_2d(GRID, DIM)
    for i, j in itertools.product(range(GRID[0]), range(GRID[1])):
        rows = table[[_row(i, j, k) for k in range(GRID[2])]]
        torch.testing.assert_close(rows, rows[:1].expand_as(rows), atol=0, rtol=0)
    plane = table[[_row(i, j, 0) for i, j in itertools.product(range(GRID[0]), range(GRID[1]))]]
    dist = torch.cdist(plane, plane)
    assert dist[~torch.eye(len(plane), dtype=torch.bool)].min() > 1e-3


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_3d_sincos_similarity_decays_along_each_axis(axis):
    grid = [8, 8, 8]
    table = sincos_3d(tuple(grid), 192)
    steps = [tuple(s if a == axis else 0 for a in range(3)) for s in range(grid[axis])]
    sims = torch.stack([table[_row(0, 0, 0, grid)] @ table[_row(*p, grid)] for p in steps])
    # Sin-cos similarity falls off with distance, with small ripples far out: strictly decreasing over
    # the first steps, and never climbing back to the nearest neighbour's value.
    assert torch.all(sims[1:5] < sims[:4]), sims
    assert sims[0] == sims.max() and sims[2:].max() < sims[1], sims


def test_3d_sincos_matches_authors_layout():
    """Reference transcription of ASAP's get_3d_sincos_pos_embed: [sin h, cos h, sin w, cos w, sin d, cos d]."""
    n = DIM // 6
    omega = 1.0 / 10000 ** (np.arange(n) / n)
    ref = np.zeros((math.prod(GRID), DIM))
    for i, j, k in itertools.product(*map(range, GRID)):
        ref[_row(i, j, k)] = np.concatenate([f(c * omega) for c in (i, j, k) for f in (np.sin, np.cos)])
    np.testing.assert_allclose(sincos_3d(GRID, DIM).numpy(), ref, atol=1e-6)


def test_2d_legacy_matches_official_loop():
    """Reference transcription of SimCroP's create_sin_cos_position_embedding (even: sin h, odd: cos w)."""
    div = np.exp(np.arange(0, DIM, 2) * -(np.log(10000.0) / DIM))
    ref = np.zeros((*GRID, DIM))
    for i, j, k in itertools.product(*map(range, GRID)):
        ref[i, j, k, 0::2] = np.sin(i * div)
        ref[i, j, k, 1::2] = np.cos(j * div)
    np.testing.assert_allclose(legacy_2d(GRID, DIM).numpy(), ref.reshape(-1, DIM), atol=1e-6)


def test_pos_table_width_rules():
    with pytest.raises(ValueError, match="divisible by 6"):
        sincos_3d(GRID, 100)
    with pytest.raises(ValueError, match="even"):
        legacy_2d(GRID, 99)
    with pytest.raises(ValueError, match="pos_embed must be one of"):
        build_pos_embed("learned", GRID, 96)


# --- timm / official key names ------------------------------------------------------------------

def _expected_vit_keys(depth: int) -> list[str]:
    keys = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    for i in range(depth):
        for layer in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            keys += [f"blocks.{i}.{layer}.weight", f"blocks.{i}.{layer}.bias"]
    return keys + ["norm.weight", "norm.bias"]


def test_vit_base_state_dict_keys_match_timm_layout():
    vit = build_vit("vit_base", img_size=IMG, patch_size=PATCH)
    state = vit.state_dict()
    assert sorted(state) == sorted(_expected_vit_keys(12))
    shapes = {
        "cls_token": (1, 1, 768), "pos_embed": (1, 9, 768), "patch_embed.proj.weight": (768, 1, 16, 16, 8),
        "blocks.0.attn.qkv.weight": (2304, 768), "blocks.11.mlp.fc1.weight": (3072, 768),
        "blocks.11.mlp.fc2.weight": (768, 3072), "norm.weight": (768,),
    }
    assert {k: tuple(state[k].shape) for k in shapes} == shapes
    assert vit.norm.eps == 1e-6


def test_presets_and_build_errors():
    assert VIT_CONFIGS["vit_base"] == dict(embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0)
    assert VIT_CONFIGS["vit_demo"]["embed_dim"] == 192 and VIT_CONFIGS["vit_demo"]["depth"] == 4
    for cfg in VIT_CONFIGS.values():
        assert cfg["embed_dim"] % 6 == 0 and cfg["embed_dim"] % cfg["num_heads"] == 0
    with pytest.raises(ValueError, match="unknown ViT preset"):
        build_vit("vit_huge")
    with pytest.raises(ValueError, match="unknown ViT config keys"):
        build_vit(dict(TINY, width=3))
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        build_vit(dict(TINY), img_size=(30, 32, 16))


# --- input contract -----------------------------------------------------------------------------

@pytest.mark.parametrize("x, message", [
    (torch.zeros(2, 32, 32, 16), r"shape \(B, 1, H, W, D\)"),
    (torch.zeros(2, 2, 32, 32, 16), r"shape \(B, 1, H, W, D\)"),
    (torch.zeros(2, 1, 32, 30, 16), "axis W = 30 is not divisible by the patch size 16"),
    (torch.zeros(2, 1, 32, 32, 16, dtype=torch.int16), "dtype must be floating point"),
    (torch.full((1, 1, 32, 32, 16), -1000.0), r"values must lie in \[-1.05, 1.05\].*raw HU"),
    (torch.full((1, 1, 32, 32, 16), float("nan")), "finite"),
    ([[0.0]], "torch.Tensor"),
])
def test_check_input_names_the_rule(x, message):
    with pytest.raises(ValueError, match=message):
        check_input(x, PATCH)


def test_check_input_accepts_contract_and_margin():
    check_input(_ct(), PATCH)
    check_input(torch.full((1, 1, 32, 32, 16), 1.08), PATCH, max_abs=1.1)


def test_forward_rejects_wrong_layout():
    vit = _vit()
    with pytest.raises(ValueError, match="spatial size"):
        vit(_ct(1, (64, 32, 16)))
    with pytest.raises(ValueError, match="dtype must be floating point"):
        vit(torch.zeros(1, 1, *IMG, dtype=torch.int16))
