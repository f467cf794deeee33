"""Weight-decay groups and the warmup + cosine schedule."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from simcrop.optim import build_optimizer, build_scheduler, clip_gradients, lr_at, param_groups
from train_helpers import TinyMAE


class WithFrozenText(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = TinyMAE()
        self.text_encoder = nn.Linear(4, 4)
        self.text_encoder.requires_grad_(False)


def test_no_decay_on_biases_norms_and_tokens():
    model = WithFrozenText()
    groups = param_groups(model, 0.05)
    decay = next(g for g in groups if g["weight_decay"] == 0.05)["names"]
    no_decay = next(g for g in groups if g["weight_decay"] == 0.0)["names"]
    assert not any(n.startswith("text_encoder.") for n in decay + no_decay)        # frozen: not optimised
    assert "model.mae.encoder.cls_token" in no_decay
    assert "model.mae.decoder.mask_token" in no_decay
    assert "model.mae.encoder.blocks.0.norm1.weight" in no_decay
    assert "model.mae.encoder.norm.weight" in no_decay
    assert all(n.endswith(".weight") for n in decay)
    assert all(not n.endswith(".bias") for n in decay)
    assert "model.mae.encoder.blocks.0.attn.qkv.weight" in decay
    assert "model.mae.encoder.patch_embed.proj.weight" in decay
    # pos_embed is a fixed buffer, never a parameter, so no optimiser can decay it
    assert "model.mae.encoder.pos_embed" not in decay + no_decay
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(decay) | set(no_decay) == trainable


def test_model_no_weight_decay_hook_and_learned_pos_embed():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
            self.table = nn.Parameter(torch.zeros(4, 8))
            self.proj = nn.Linear(8, 8)

        def no_weight_decay(self):
            return {"table"}

    groups = {g["weight_decay"]: g["names"] for g in param_groups(M(), 0.1)}
    assert groups[0.1] == ["proj.weight"]
    assert sorted(groups[0.0]) == ["pos_embed", "proj.bias", "table"]


def test_optimizer_uses_config_betas():
    opt = build_optimizer(TinyMAE(), 1e-3, 0.05, [0.9, 0.95])
    assert opt.param_groups[0]["betas"] == (0.9, 0.95)


def test_schedule_warmup_then_cosine_to_min_lr():
    lr, min_lr, warmup, total = 1e-3, 1e-5, 5, 50
    values = [lr_at(s, lr, min_lr, warmup, total) for s in range(total)]
    assert values[:warmup] == pytest.approx([lr * (s + 1) / warmup for s in range(warmup)])
    assert values[warmup] == pytest.approx(lr)
    assert values[-1] == pytest.approx(min_lr)
    assert all(a >= b for a, b in zip(values[warmup:], values[warmup + 1:]))
    mid = warmup + (total - 1 - warmup) / 2
    assert lr_at(int(mid), lr, min_lr, warmup, total) == pytest.approx(
        min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * (int(mid) - warmup) / (total - 1 - warmup))))
    assert lr_at(total + 10, lr, min_lr, warmup, total) == pytest.approx(min_lr)
    # the LambdaLR runs optimiser step k at lr_at(k), for both groups
    model = TinyMAE()
    opt = build_optimizer(model, lr, 0.05)
    sched = build_scheduler(opt, lr, min_lr, warmup, total)
    seen = []
    for _ in range(total):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert [s[0] for s in seen] == pytest.approx(values) and [s[1] for s in seen] == pytest.approx(values)
    with pytest.raises(ValueError):
        build_scheduler(opt, lr, 2 * lr, warmup, total)


def test_no_warmup_starts_at_peak():
    assert lr_at(0, 1.0, 0.0, 0, 10) == pytest.approx(1.0)


def test_clip_gradients():
    layer = nn.Linear(3, 3)
    layer(torch.ones(1, 3)).sum().mul(100).backward()
    norm = clip_gradients(layer, 1.0)
    assert norm > 1.0
    total = torch.sqrt(sum((p.grad ** 2).sum() for p in layer.parameters()))
    assert total == pytest.approx(1.0, rel=1e-4)
    assert clip_gradients(layer, 0.0) is None
