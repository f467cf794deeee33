"""UNETR (Hatamizadeh et al. 2022) on our `VisionTransformer3D`, assembled from MONAI's UNETR blocks.

Same wiring as MONAI's `UNETR` and the official SimCroP `Down-stream/Segmentation/unetr.py`:

    x (B, 1, H, W, D) ─ encoder1 (full resolution conv block) ────────────────────────── skip0 ─┐
    ViT hidden[s1] ─ encoder2 (3 x up x2) ─ skip1 (H/2, W/2, D)    ─────────────────────┐        │
    ViT hidden[s2] ─ encoder3 (2 x up x2) ─ skip2 (H/4, W/4, D/2)  ────────────┐        │        │
    ViT hidden[s3] ─ encoder4 (1 x up x2) ─ skip3 (H/8, W/8, D/4)  ───┐        │        │        │
    ViT norm(out)  ──────────────── decoder5 (x2) ──────────────── + ─ decoder4 ─ decoder3 ─ decoder2 ─ out
                                                                          (x2)     (x2)   (last_up)

Only patch tokens are used (the CLS token is dropped); tokens are reshaped to the (gh, gw, gd) grid
in the ViT's token order (h outermost, d innermost).

`official_vit=True` (config `segment.official_vit`) runs the encoder as the official UNETR's ViT
(`Down-stream/Segmentation/vision_transformer.py` with the loader of its `main.py`) does with the same
weights file: no CLS token in the sequence, the depth-agnostic `2d_legacy` table added to the patch
tokens (the official ViT always builds that table and never loads a file's `pos_embed`; for cubic grids,
the only ones it accepts, the two tables are the same), and a fresh final LayerNorm (weight 1, bias 0:
the official `fc_norm` is not in our files, whose trained `norm.*` it ignores). Blocks and patch embedding
are the file's in both modes. The encoder's `pos_embed` buffer and `norm` are replaced in place.

Anisotropic patch (16, 16, 8): the four up-sampling stages must multiply to the patch size per axis.
The three deep stages double every axis and the last (decoder2, full-resolution side) uses
`last_up = patch / 8`, i.e. (2, 2, 1). Why the last: a patch covers a physical cube (24 mm at 1.5 x 1.5
x 3 mm voxels, 48 mm at the demo's 3 x 3 x 6 mm), so halving all three axes keeps every deep decoder
map physically isotropic (12, 6, 3 mm cubes) and lets the skip paths stay MONAI's plain x2 `PrUp`
blocks; only the final step goes to the native, anisotropic voxel grid by up-sampling in-plane. This
is also where the official code adapts UNETR (there: trilinear resize to the input size + conv; here:
a transposed conv with kernel = stride = (2, 2, 1), so the block stays MONAI's `UnetrUpBlock`).
Supported patch sides are therefore 8 and 16 (raise otherwise).

Skip indices: the official (3, 6, 9) of a 12-block ViT are the outputs of blocks k * depth / 4,
k = 1, 2, 3 (0-based `hidden[i]`). For other depths the same rule is used, min(k * depth // 4, depth - 1):
depth 4 (the demo) -> (1, 2, 3), depth 2 -> (0, 1, 1). At depth 4 the deepest skip and the bottleneck
come from the same block (skip un-normed, bottleneck after the final LayerNorm).
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
from torch import nn

from simcrop.model.pos_embed import build_pos_embed
from simcrop.model.vit3d import VisionTransformer3D

log = logging.getLogger(__name__)


def skip_indices_for(depth: int) -> tuple[int, int, int]:
    """0-based block indices of the three ViT skips: (3, 6, 9) at depth 12, proportional otherwise."""
    if depth < 1:
        raise ValueError(f"ViT depth must be >= 1; got {depth}")
    return tuple(min(k * depth // 4, depth - 1) for k in (1, 2, 3))


def last_upsample(patch_size: Sequence[int]) -> tuple[int, int, int]:
    """Up-sampling factor of the final decoder stage per axis: patch / 8 (three x2 stages come before)."""
    if any(p not in (8, 16) for p in patch_size):
        raise ValueError("UNETR needs patch sides of 8 or 16 (three x2 stages, then x1 or x2); "
                         f"got {list(patch_size)}")
    return tuple(p // 8 for p in patch_size)


@torch.no_grad()
def as_official_vit(encoder: VisionTransformer3D) -> VisionTransformer3D:
    """Make `encoder` compute what the official UNETR's ViT computes from the same weights (see above):
    `2d_legacy` position table, final LayerNorm reset to weight 1 / bias 0. Run it without the CLS token
    (`forward_features(..., cls_token=False)`). Returns the same encoder."""
    table = build_pos_embed("2d_legacy", encoder.grid_size, encoder.embed_dim)
    encoder.pos_embed.copy_(table.to(encoder.pos_embed))
    encoder.pos_embed_kind = "2d_legacy"
    nn.init.ones_(encoder.norm.weight)
    nn.init.zeros_(encoder.norm.bias)
    log.info("encoder run as the official UNETR's ViT: no CLS token, 2d_legacy position table, final "
             "LayerNorm reset to weight 1 / bias 0 (the file's table and norm are not used)")
    return encoder


class UNETR(nn.Module):
    """UNETR with a `VisionTransformer3D` encoder (fine-tuned, not frozen).

    forward: x (B, 1, H, W, D) float32 scaled HU in [-1, 1], (H, W, D) = encoder.img_size
             -> logits (B, out_channels, H, W, D).
    """

    def __init__(self, encoder: VisionTransformer3D, out_channels: int, feature_size: int = 16,
                 norm_name: str | tuple = "instance", res_block: bool = True, conv_block: bool = True,
                 skip_indices: Sequence[int] | None = None, official_vit: bool = False):
        super().__init__()
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1; got {out_channels}")
        self.encoder = encoder
        self.official_vit = bool(official_vit)
        if self.official_vit:
            as_official_vit(encoder)
        self.skip_indices = tuple(skip_indices) if skip_indices is not None else skip_indices_for(encoder.depth)
        for i in self.skip_indices:
            if not 0 <= i < encoder.depth:
                raise ValueError(f"skip index {i} is outside 0..{encoder.depth - 1}")
        hidden, f = encoder.embed_dim, feature_size
        up = last_upsample(encoder.patch_size)
        common = dict(spatial_dims=3, kernel_size=3, norm_name=norm_name, res_block=res_block)
        self.encoder1 = UnetrBasicBlock(in_channels=1, out_channels=f, stride=1, **common)
        self.encoder2 = UnetrPrUpBlock(in_channels=hidden, out_channels=f * 2, num_layer=2, stride=1,
                                       upsample_kernel_size=2, conv_block=conv_block, **common)
        self.encoder3 = UnetrPrUpBlock(in_channels=hidden, out_channels=f * 4, num_layer=1, stride=1,
                                       upsample_kernel_size=2, conv_block=conv_block, **common)
        self.encoder4 = UnetrPrUpBlock(in_channels=hidden, out_channels=f * 8, num_layer=0, stride=1,
                                       upsample_kernel_size=2, conv_block=conv_block, **common)
        self.decoder5 = UnetrUpBlock(in_channels=hidden, out_channels=f * 8, upsample_kernel_size=2, **common)
        self.decoder4 = UnetrUpBlock(in_channels=f * 8, out_channels=f * 4, upsample_kernel_size=2, **common)
        self.decoder3 = UnetrUpBlock(in_channels=f * 4, out_channels=f * 2, upsample_kernel_size=2, **common)
        self.decoder2 = UnetrUpBlock(in_channels=f * 2, out_channels=f, upsample_kernel_size=up, **common)
        self.out = UnetOutBlock(spatial_dims=3, in_channels=f, out_channels=out_channels)

    @property
    def img_size(self) -> tuple[int, int, int]:
        return self.encoder.img_size

    def to_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, 1 + N, C), CLS first ((B, N, C) with official_vit) -> (B, C, gh, gw, gd) patch-token map."""
        B, _, C = tokens.shape
        grid = tokens[:, 0 if self.official_vit else 1:].reshape(B, *self.encoder.grid_size, C)
        return grid.permute(0, 4, 1, 2, 3).contiguous()

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The ViT's (normed output, per-block hidden states), as `forward` uses them."""
        return self.encoder.forward_features(x, return_hidden=True, cls_token=not self.official_vit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, hidden = self.encode(x)
        s1, s2, s3 = (self.to_grid(hidden[i]) for i in self.skip_indices)
        enc1 = self.encoder1(x)
        enc2 = self.encoder2(s1)
        enc3 = self.encoder3(s2)
        enc4 = self.encoder4(s3)
        dec3 = self.decoder5(self.to_grid(out), enc4)
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        return self.out(self.decoder2(dec1, enc1))
