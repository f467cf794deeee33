"""What every pre-training module returns, shared by SimCroP and the baselines (no model imports here)."""
from __future__ import annotations

import torch


def combine(losses: dict[str, torch.Tensor], weights: dict[str, float]) -> dict:
    """{"loss": Σ_name w·L, "losses": {name: L detached}} over the computed losses."""
    if not losses:
        raise ValueError("every loss weight is 0: nothing to train")
    total = sum(weights.get(name, 1.0) * value for name, value in losses.items())
    return {"loss": total, "losses": {name: value.detach().float() for name, value in losses.items()}}
