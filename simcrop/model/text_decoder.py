"""Report reconstruction (method.md §2-3): a small BERT, randomly initialised here, fed the fusion output.

The default text encoder (all-MiniLM-L6-v2) has no MLM head, so the decoder is a fresh BERT of the text
width with the tokenizer's vocabulary. The fusion output enters as `inputs_embeds` (BERT then adds its
own position and token-type embeddings and a LayerNorm). Logits are computed only where the loss needs
them: on the masked positions by default, everywhere with `mlm_loss_on: all`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over positions whose label is not -100.

    logits (..., V) float; labels (...) int64 token ids or -100. Positions labelled -100 do not count,
    whatever their logits. No labelled position: NaN-free zero attached to the graph.
    """
    flat_logits, flat_labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    if not bool((flat_labels != IGNORE).any()):
        return flat_logits.sum() * 0.0
    return F.cross_entropy(flat_logits.float(), flat_labels, ignore_index=IGNORE)


class TextDecoder(nn.Module):
    """BERT encoder (num_layers × num_heads, width = hidden_size) + MLM head over `vocab_size` tokens."""

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int = 6, num_heads: int = 6,
                 max_positions: int = 512, pad_token_id: int = 0, dropout: float = 0.1):
        super().__init__()
        from transformers import BertConfig, BertForMaskedLM

        if hidden_size % num_heads != 0:
            raise ValueError(f"text decoder width {hidden_size} must be divisible by text_decoder_heads {num_heads}")
        self.config = BertConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                                 num_attention_heads=num_heads, intermediate_size=4 * hidden_size,
                                 max_position_embeddings=max_positions, pad_token_id=pad_token_id,
                                 hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
        self.mlm = BertForMaskedLM(self.config)     # `mlm.bert` (no pooler) and `mlm.cls` (the MLM head)

    def hidden(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """embeds (B, L, H) fusion output; attention_mask (B, L) 1 = real → hidden states (B, L, H)."""
        return self.mlm.bert(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state

    def forward(self, embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> dict:
        """labels (B, L) int64, -100 = no loss. Returns dict(loss, logits (T, V) for the T labelled
        positions in row-major order, labels (T,))."""
        h = self.hidden(embeds, attention_mask)
        where = labels != IGNORE
        logits = self.mlm.cls(h[where])                                          # (T, V)
        picked = labels[where]
        return dict(loss=mlm_loss(logits, picked), logits=logits, labels=picked)
