"""Fixed sine-cosine position tables for a 3D patch grid.

Token order everywhere is the one `Conv3d(...).flatten(2)` gives over a (h, w, d) grid: h outermost,
d innermost (row `(i * gw + j) * gd + k` is patch (i, j, k)). The official SimCroP `patchify3D`
(einsum `nchpwqdr->nhwdpqrc`) uses the same order, so tables and weights move between the two.

Two kinds, both returned as `(1 + N, C)` float32 with a zero first row for the CLS token (as in MAE):

- `3d_sincos` (default): a sixth of the channels each for sin(h), cos(h), sin(w), cos(w), sin(d), cos(d),
  frequencies 10000^(-i / (C/6)). Same layout as `get_3d_sincos_pos_embed` in the authors' later
  pre-training code (ToniChopp/ASAP, Pre-training-ASAP/util/pos_embed.py). C must divide by 6: we
  raise rather than pad, because a padded table would no longer match that code's checkpoints.
- `2d_legacy`: the table of the official SimCroP downstream code (ToniChopp/SimCroP,
  Down-stream/*/utils/pos_embed*.py, `create_sin_cos_position_embedding`): even channels
  sin(h * f_i), odd channels cos(w * f_i), f_i = 10000^(-2i / C); depth is ignored, so patches that
  differ only in d share a row. Offered only to load and fine-tune the authors' weights.
"""
from __future__ import annotations

import math

import torch

from simcrop.model.objectives import POS_EMBED_KINDS


def _grid(grid_size: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return three (N,) float64 coordinate vectors (h, w, d) in token order."""
    axes = [torch.arange(n, dtype=torch.float64) for n in grid_size]
    gh, gw, gd = torch.meshgrid(*axes, indexing="ij")
    return gh.flatten(), gw.flatten(), gd.flatten()


def sincos_3d(grid_size: tuple[int, int, int], dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Return the (N, dim) 3D sin-cos table, N = prod(grid_size); values in [-1, 1]."""
    if dim % 6 != 0:
        raise ValueError(
            f"3d_sincos needs an embedding width divisible by 6 (sin and cos for each of h, w, d); "
            f"got {dim}. Pick e.g. {6 * max(1, dim // 6)} or {6 * (dim // 6 + 1)}."
        )
    n = dim // 6
    omega = 1.0 / temperature ** (torch.arange(n, dtype=torch.float64) / n)      # (n,)
    parts = []
    for coord in _grid(grid_size):
        angles = coord[:, None] * omega[None, :]                                  # (N, n)
        parts += [torch.sin(angles), torch.cos(angles)]
    return torch.cat(parts, dim=1).float()


def legacy_2d(grid_size: tuple[int, int, int], dim: int) -> torch.Tensor:
    """Return the (N, dim) table of the official SimCroP downstream code (depth ignored)."""
    if dim % 2 != 0:
        raise ValueError(f"2d_legacy needs an even embedding width; got {dim}")
    freqs = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * -(math.log(10000.0) / dim))
    gh, gw, _ = _grid(grid_size)
    table = torch.empty(gh.numel(), dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(gh[:, None] * freqs[None, :])
    table[:, 1::2] = torch.cos(gw[:, None] * freqs[None, :])
    return table.float()


def build_pos_embed(kind: str, grid_size: tuple[int, int, int], dim: int) -> torch.Tensor:
    """Return the (1, 1 + N, dim) float32 table with a zero CLS row first."""
    if kind == "3d_sincos":
        table = sincos_3d(grid_size, dim)
    elif kind == "2d_legacy":
        table = legacy_2d(grid_size, dim)
    else:
        raise ValueError(f"pos_embed must be one of {POS_EMBED_KINDS}; got {kind!r}")
    return torch.cat([torch.zeros(1, dim), table], dim=0).unsqueeze(0)


def identify_pos_embed(table: torch.Tensor, grid_size: tuple[int, int, int], atol: float = 1e-4) -> str | None:
    """Which kind of `POS_EMBED_KINDS` a (1, 1 + N, C) table is for `grid_size` (CLS row ignored); None if none.

    The tolerance covers tables computed in float32 by other code (the authors' `get_3d_sincos_pos_embed`
    works in float32 torch, `create_sin_cos_position_embedding` in float64 numpy): up to ~1e-5 apart.
    """
    if table.ndim != 3 or table.shape[0] != 1:
        return None
    n, dim = table.shape[1] - 1, table.shape[2]
    if n != math.prod(grid_size):
        return None
    for kind in POS_EMBED_KINDS:
        try:
            ref = build_pos_embed(kind, grid_size, dim)
        except ValueError:                               # width this kind cannot take
            continue
        if torch.allclose(table[:, 1:].detach().float().cpu(), ref[:, 1:], rtol=0.0, atol=atol):
            return kind
    return None
