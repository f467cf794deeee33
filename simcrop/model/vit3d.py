"""3D Vision Transformer encoder for chest CT crops.

Input contract (checked by `check_input`):
    modality  CT, one channel
    units     HU clipped to [-1000, 1000], then scaled by 1/1000 to [-1, 1]
    layout    (B, 1, H, W, D), axes in RAS order (H = x, W = y, D = z), each divisible by the patch size
    dtype     floating point (float32; bf16/fp16 under autocast)
    values    within [-max_abs, max_abs], default 1.05 (a little slack for interpolation overshoot)

Parameter names follow timm's `VisionTransformer` (`cls_token`, `pos_embed`, `patch_embed.proj`,
`blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`, `norm`) so the official SimCroP
downstream code (`models_vit.vit_base_patch16`, UNETR's `vision_transformer.ViT`) loads our weights.
Its patch embedding applies the same Conv3d to pre-cut patches in the same token order, so
`patch_embed.proj.weight` (C, 1, ph, pw, pd) means the same thing in both.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from simcrop.model.pos_embed import build_pos_embed

Size3 = tuple[int, int, int]

# Widths are multiples of 6 so the 3D sin-cos table splits evenly over (h, w, d).
VIT_CONFIGS: dict[str, dict] = {
    "vit_demo": dict(embed_dim=192, depth=4, num_heads=3, mlp_ratio=4.0),
    "vit_tiny": dict(embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0),
    "vit_small": dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0),
    "vit_base": dict(embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0),
}


def check_input(x: torch.Tensor, patch_size: Sequence[int] = (16, 16, 8), max_abs: float = 1.05) -> None:
    """Raise ValueError naming the broken rule unless x is a (B, 1, H, W, D) scaled-HU CT batch.

    Reads the value range back to the host (a device sync): call it on data, not in the hot loop.
    Batches after intensity-shift augmentation (offset 0.1) need max_abs=1.1.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"input must be a torch.Tensor, got {type(x).__name__}")
    _check_layout(x, patch_size)
    if x.numel() == 0:
        raise ValueError(f"input is empty: shape {tuple(x.shape)}")
    lo, hi = torch.aminmax(x.detach())
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("input values must be finite (found NaN or inf)")
    if lo < -max_abs or hi > max_abs:
        raise ValueError(
            f"input values must lie in [-{max_abs}, {max_abs}] (HU clipped to [-1000, 1000] then divided "
            f"by 1000); got min {lo:.4g}, max {hi:.4g} - raw HU or an unscaled volume?"
        )


def _check_layout(x: torch.Tensor, patch_size: Sequence[int]) -> None:
    """Shape and dtype rules only: no device sync, so the forward pass can afford it."""
    if x.ndim != 5 or x.shape[1] != 1:
        raise ValueError(f"input must have shape (B, 1, H, W, D) (one CT channel); got {tuple(x.shape)}")
    for axis, size, p in zip("HWD", x.shape[2:], patch_size):
        if size % p != 0:
            raise ValueError(f"input axis {axis} = {size} is not divisible by the patch size {p}")
    if not x.is_floating_point():
        raise ValueError(f"input dtype must be floating point (scaled HU); got {x.dtype}")


class PatchEmbed3D(nn.Module):
    """Cut (B, 1, H, W, D) into non-overlapping patches and embed each to (B, N, C)."""

    def __init__(self, img_size: Size3 = (224, 224, 112), patch_size: Size3 = (16, 16, 8),
                 in_chans: int = 1, embed_dim: int = 768):
        super().__init__()
        for axis, size, p in zip("HWD", img_size, patch_size):
            if size % p != 0:
                raise ValueError(f"img_size {axis} = {size} is not divisible by patch_size {p}")
        self.img_size, self.patch_size = tuple(img_size), tuple(patch_size)
        self.grid_size: Size3 = tuple(s // p for s, p in zip(img_size, patch_size))
        self.num_patches = math.prod(self.grid_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, H, W, D) -> (B, N, C), tokens ordered h-major, d-minor."""
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"embed_dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)   # timm layout: [q | k | v], heads inside each
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L, C) -> (B, L, C)."""
        B, L, C = x.shape
        q, k, v = self.qkv(x).reshape(B, L, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)     # (B, heads, L, C / heads)
        return self.proj(x.transpose(1, 2).reshape(B, L, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block; drop_path is stochastic depth for fine-tuning (0 in pre-training)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, norm_eps: float = 1e-6,
                 drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_path == 0.0:
            return x
        keep = 1.0 - self.drop_path
        return x * x.new_empty(x.shape[0], 1, 1).bernoulli_(keep) / keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L, C) -> (B, L, C)."""
        x = x + self._drop(self.attn(self.norm1(x)))
        return x + self._drop(self.mlp(self.norm2(x)))


def init_weights(module: nn.Module) -> None:
    """MAE initialisation: xavier-uniform linears with zero bias, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class VisionTransformer3D(nn.Module):
    """ViT over 3D patches with a CLS token and a fixed sin-cos position table.

    `pos_embed` is a persistent buffer, not a parameter: it is saved in the state dict under the timm
    name but no optimiser can train it or decay it.
    """

    def __init__(self, img_size: Size3 = (224, 224, 112), patch_size: Size3 = (16, 16, 8), in_chans: int = 1,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 pos_embed: str = "3d_sincos", norm_eps: float = 1e-6, drop_path_rate: float = 0.0):
        super().__init__()
        self.embed_dim, self.depth, self.pos_embed_kind = embed_dim, depth, pos_embed
        self.patch_embed = PatchEmbed3D(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer("pos_embed", build_pos_embed(pos_embed, self.grid_size, embed_dim))
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]   # linear, as timm
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, norm_eps, r) for r in rates)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self._init_weights()

    def _init_weights(self) -> None:
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))   # as a linear layer over the patch voxels
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        self.apply(init_weights)

    @property
    def img_size(self) -> Size3:
        return self.patch_embed.img_size

    @property
    def patch_size(self) -> Size3:
        return self.patch_embed.patch_size

    @property
    def grid_size(self) -> Size3:
        """Patches along (h, w, d)."""
        return self.patch_embed.grid_size

    @property
    def num_patches(self) -> int:
        return self.patch_embed.num_patches

    @property
    def patch_voxels(self) -> int:
        return math.prod(self.patch_size)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs: (B, 1, H, W, D) -> (B, N, ph * pw * pd), voxels in (ph, pw, pd) order as the official code."""
        B = imgs.shape[0]
        (gh, gw, gd), (ph, pw, pd) = self.grid_size, self.patch_size
        x = imgs.reshape(B, 1, gh, ph, gw, pw, gd, pd)
        x = torch.einsum("nchpwqdr->nhwdpqrc", x)
        return x.reshape(B, gh * gw * gd, ph * pw * pd)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, ph * pw * pd) -> (B, 1, H, W, D); inverse of `patchify`."""
        B = x.shape[0]
        (gh, gw, gd), (ph, pw, pd) = self.grid_size, self.patch_size
        x = x.reshape(B, gh, gw, gd, ph, pw, pd, 1)
        x = torch.einsum("nhwdpqrc->nchpwqdr", x)
        return x.reshape(B, 1, gh * ph, gw * pw, gd * pd)

    def _embed(self, x: torch.Tensor, ids_keep: torch.Tensor | None, cls_token: bool = True) -> torch.Tensor:
        """x: (B, 1, H, W, D) -> (B, 1 + K, C) tokens with positions, CLS first ((B, K, C) without CLS)."""
        _check_layout(x, self.patch_size)
        if tuple(x.shape[2:]) != self.img_size:
            raise ValueError(f"input spatial size {tuple(x.shape[2:])} != model img_size {self.img_size}")
        # Positions go on before selection so each kept token carries its own place in the grid.
        tokens = self.patch_embed(x) + self.pos_embed[:, 1:].to(x.dtype)
        if ids_keep is not None:
            tokens = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        if not cls_token:
            return tokens
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        return torch.cat([cls.to(tokens.dtype), tokens], dim=1)

    def forward_features(self, x: torch.Tensor, ids_keep: torch.Tensor | None = None,
                         return_hidden: bool = False, cls_token: bool = True):
        """Encode a CT batch, optionally only the patches listed in ids_keep.

        x: (B, 1, H, W, D) float in [-1, 1]; ids_keep: (B, K) int64 patch indices or None (all N).
        Returns (B, 1 + K, C) after the final LayerNorm, CLS at index 0, patch tokens in ids_keep order.
        With return_hidden, also a list of `depth` tensors (B, 1 + K, C): the output of each block,
        before the final norm (`hidden[i]` is after blocks[i], as the official UNETR indexes it).
        cls_token=False runs the patch tokens alone (every shape above without the leading 1): what the
        official SimCroP UNETR's ViT computes (`pos_embed[:, 1:]` added, no CLS token in attention).
        """
        x = self._embed(x, ids_keep, cls_token)
        hidden = []
        for blk in self.blocks:
            x = blk(x)
            hidden.append(x)
        x = self.norm(x)
        return (x, hidden) if return_hidden else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, H, W, D) float in [-1, 1] -> (B, 1 + N, C), CLS first."""
        return self.forward_features(x)

    def get_intermediate_layers(self, x: torch.Tensor, indices: Sequence[int] = (3, 6, 9)) -> list[torch.Tensor]:
        """Return [(B, 1 + N, C) output of blocks[i] for i in indices] (0-based, un-normed).

        The default (3, 6, 9) is what the official / MONAI UNETR takes as skips (`hidden_states_out[3]`,
        `[6]`, `[9]`); its fourth input is the final normed output, `forward(x)`.
        """
        for i in indices:
            if not 0 <= i < self.depth:
                raise ValueError(f"block index {i} is outside 0..{self.depth - 1}")
        _, hidden = self.forward_features(x, return_hidden=True)
        return [hidden[i] for i in indices]


def build_vit(name_or_dict: str | Mapping, img_size: Size3 = (224, 224, 112), patch_size: Size3 = (16, 16, 8),
              pos_embed: str = "3d_sincos", **overrides) -> VisionTransformer3D:
    """Build a ViT from a preset name in VIT_CONFIGS or a dict of its keys; unknown keys raise."""
    if isinstance(name_or_dict, str):
        if name_or_dict not in VIT_CONFIGS:
            raise ValueError(f"unknown ViT preset {name_or_dict!r}; choose from {sorted(VIT_CONFIGS)}")
        cfg = dict(VIT_CONFIGS[name_or_dict])
    else:
        cfg = dict(name_or_dict)
    cfg.update(overrides)
    allowed = {"embed_dim", "depth", "num_heads", "mlp_ratio", "norm_eps", "drop_path_rate", "in_chans"}
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ValueError(f"unknown ViT config keys {unknown}; allowed: {sorted(allowed)}")
    return VisionTransformer3D(img_size=tuple(img_size), patch_size=tuple(patch_size), pos_embed=pos_embed, **cfg)
