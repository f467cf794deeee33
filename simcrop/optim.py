"""AdamW with decoupled weight decay on weight matrices only, and a per-step warmup + cosine schedule.

No decay (MAE / timm convention) on: 1-D parameters (biases, LayerNorm and other norm scales), any
name ending in `.bias`, and tokens and tables — `cls_token`, `pos_embed`, `mask_token` and whatever
a module lists in its own `no_weight_decay()` — which are 3-D in our models, so a shape rule alone
would miss them. Frozen parameters (requires_grad False) are left out of the optimiser.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

NO_DECAY_NAMES = ("cls_token", "pos_embed", "mask_token", "dist_token", "register_tokens")


def _model_no_decay(model: nn.Module) -> set[str]:
    """Full parameter names listed by any submodule's `no_weight_decay()` (timm's hook)."""
    names = set()
    for prefix, module in model.named_modules():
        hook = getattr(module, "no_weight_decay", None)
        if callable(hook):
            names |= {f"{prefix}.{n}" if prefix else n for n in hook()}
    return names


def decays(name: str, param: torch.Tensor, extra_no_decay: Iterable[str] = ()) -> bool:
    """Whether parameter `name` gets weight decay."""
    leaf = name.rsplit(".", 1)[-1]
    return not (param.ndim <= 1 or name.endswith(".bias") or leaf in NO_DECAY_NAMES or name in set(extra_no_decay))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups, decay and no-decay, each with a `names` list (kept for tests and logs)."""
    extra = _model_no_decay(model)
    groups = {True: {"params": [], "names": [], "weight_decay": weight_decay},
              False: {"params": [], "names": [], "weight_decay": 0.0}}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        group = groups[decays(name, param, extra)]
        group["params"].append(param)
        group["names"].append(name)
    return [g for g in groups.values() if g["params"]]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.95)) -> torch.optim.AdamW:
    groups = param_groups(model, weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters (all requires_grad False)")
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(float(b) for b in betas))


def lr_at(step: int, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate of optimiser step `step` (0-based).

    Linear warmup lr x (step + 1) / warmup over the first `warmup_steps` steps, then half a cosine from
    lr at step = warmup_steps down to min_lr at the last step (total_steps - 1); min_lr after that.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(total_steps - 1 - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Multiplier for LambdaLR (a class, not a lambda, so the schedule's parameters are inspectable)."""

    def __init__(self, lr: float, min_lr: float, warmup_steps: int, total_steps: int):
        if lr <= 0 or min_lr < 0 or min_lr > lr:
            raise ValueError(f"need 0 <= min_lr <= lr and lr > 0; got lr {lr}, min_lr {min_lr}")
        if warmup_steps < 0 or total_steps < 1:
            raise ValueError(f"need warmup_steps >= 0 and steps >= 1; got {warmup_steps}, {total_steps}")
        self.lr, self.min_lr, self.warmup_steps, self.total_steps = lr, min_lr, warmup_steps, total_steps

    def __call__(self, step: int) -> float:
        return lr_at(step, self.lr, self.min_lr, self.warmup_steps, self.total_steps) / self.lr


def build_scheduler(optimizer: torch.optim.Optimizer, lr: float, min_lr: float, warmup_steps: int,
                    total_steps: int) -> LambdaLR:
    """Stepped once per optimiser step, after `optimizer.step()`; step k then runs at lr_at(k)."""
    return LambdaLR(optimizer, WarmupCosine(lr, min_lr, warmup_steps, total_steps))


def clip_gradients(model: nn.Module, max_norm: float) -> torch.Tensor | None:
    """Clip the global gradient norm (max_norm <= 0: no clipping); returns the norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm <= 0 or not params:
        return None
    return torch.nn.utils.clip_grad_norm_(params, max_norm)
