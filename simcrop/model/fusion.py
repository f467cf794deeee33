"""Cross-granularity fusion (method.md §2): masked report features attend to the visible patches.

One BERT-style block, post-norm as BERT:
    h = LN1(x + SelfAttn(x))                                  words see words (padding masked)
    c = CrossAttn(Q = h, K = V = W_p p) + W_g mean_n(p)       fine (patch) and instance (volume) granularity
    h = LN2(h + Dense(c))
    y = LN3(h + FFN(h))
x: masked report token features (B, L, H); p: visible patch tokens (B, N, C). W_p projects patches to the
text width H; W_g projects their mean (the instance-level token) and is added at every word position.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _Attention(nn.Module):
    """Multi-head attention, queries (B, Lq, H) over keys/values (B, Lk, H), via scaled_dot_product_attention."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"fusion width {dim} must be divisible by num_heads {num_heads}")
        self.num_heads, self.dropout = num_heads, dropout
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, L, H = x.shape
        return x.view(B, L, self.num_heads, H // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, key_padding: torch.Tensor | None = None) -> torch.Tensor:
        """q (B, Lq, H), kv (B, Lk, H), key_padding (B, Lk) bool True = ignore → (B, Lq, H)."""
        mask = None if key_padding is None else ~key_padding[:, None, None, :]   # True = attend
        out = F.scaled_dot_product_attention(self._split(self.q(q)), self._split(self.k(kv)),
                                             self._split(self.v(kv)), attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        B, _, Lq, _ = out.shape
        return out.transpose(1, 2).reshape(B, Lq, -1)


class FusionLayer(nn.Module):
    """text_dim H, patch_dim C → forward(words (B, L, H), patches (B, N, C), attention_mask (B, L)) → (B, L, H)."""

    def __init__(self, text_dim: int, patch_dim: int, num_heads: int = 6, mlp_ratio: float = 4.0,
                 dropout: float = 0.1, norm_eps: float = 1e-12):
        super().__init__()
        self.patch_proj = nn.Linear(patch_dim, text_dim)        # W_p: K = V = projected visible patches
        self.instance_proj = nn.Linear(patch_dim, text_dim)     # W_g: Linear(mean of patches)
        self.self_attn = _Attention(text_dim, num_heads, dropout)
        self.self_out = nn.Linear(text_dim, text_dim)
        self.norm1 = nn.LayerNorm(text_dim, eps=norm_eps)
        self.cross_attn = _Attention(text_dim, num_heads, dropout)
        self.cross_out = nn.Linear(text_dim, text_dim)
        self.norm2 = nn.LayerNorm(text_dim, eps=norm_eps)
        hidden = int(text_dim * mlp_ratio)
        self.ffn = nn.Sequential(nn.Linear(text_dim, hidden), nn.GELU(), nn.Linear(hidden, text_dim))
        self.norm3 = nn.LayerNorm(text_dim, eps=norm_eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, words: torch.Tensor, patches: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """words (B, L, H) masked report features; patches (B, N, C) visible patch tokens (all valid);
        attention_mask (B, L) 1 = real token, 0 = padding (padding keys are ignored by self-attention).
        Returns (B, L, H); rows at padding positions are computed but meaningless."""
        pad = None if attention_mask is None else ~attention_mask.bool()
        h = self.norm1(words + self.drop(self.self_out(self.self_attn(words, words, pad))))
        kv = self.patch_proj(patches)                                            # (B, N, H)
        instance = self.instance_proj(patches.mean(dim=1))                       # (B, H)
        c = self.cross_attn(h, kv) + instance[:, None, :]
        h = self.norm2(h + self.drop(self.cross_out(c)))
        return self.norm3(h + self.drop(self.ffn(h)))
