from __future__ import annotations

import torch

from simcrop.model.text_decoder import TextDecoder, mlm_loss


def test_mlm_loss_counts_only_labelled_positions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g)
    labels = torch.full((2, 5), -100)
    labels[0, 1], labels[1, 3], labels[1, 4] = 3, 7, 0
    base = mlm_loss(logits, labels)
    changed = logits.clone()
    changed[labels == -100] = torch.randn(int((labels == -100).sum()), 11, generator=g) * 50
    assert torch.allclose(mlm_loss(changed, labels), base)
    picked = labels != -100
    expected = torch.nn.functional.cross_entropy(logits[picked], labels[picked])
    assert torch.allclose(base, expected)
    assert mlm_loss(logits, torch.full((2, 5), -100)).item() == 0.0            # no label: zero, not NaN


def test_decoder_scores_only_masked_positions_and_learns():
    torch.manual_seed(0)
    dec = TextDecoder(vocab_size=50, hidden_size=24, num_layers=1, num_heads=6, dropout=0.0)
    embeds = torch.randn(2, 6, 24, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    labels = torch.full((2, 6), -100)
    labels[0, 2], labels[1, 0], labels[1, 5] = 4, 9, 17
    out = dec(embeds, mask, labels)
    assert out["logits"].shape == (3, 50) and out["labels"].tolist() == [4, 9, 17]
    out["loss"].backward()
    assert embeds.grad.abs().sum() > 0
    assert all(p.grad is not None for n, p in dec.named_parameters() if "pooler" not in n)
    opt = torch.optim.AdamW(dec.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        loss = dec(embeds.detach(), mask, labels)["loss"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.75 * first
