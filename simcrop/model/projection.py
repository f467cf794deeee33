"""Projection heads into the shared patch–sentence space (method.md §2)."""
from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """Linear → GELU → LayerNorm → Linear: (..., in_dim) → (..., out_dim); hidden width defaults to out_dim."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None, norm_eps: float = 1e-6):
        super().__init__()
        hidden_dim = hidden_dim or out_dim
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(hidden_dim, eps=norm_eps)
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(self.act(self.fc1(x))))
