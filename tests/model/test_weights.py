"""Reading weights (simcrop.model.weights): checkpoints and encoder files, without simcrop.train."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from simcrop.model.weights import (CheckpointError, encoder_prefix, load_encoder_init, load_model_state,
                                   read_checkpoint)


class WithText(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 2)
        self.text_encoder = nn.Linear(2, 2).requires_grad_(False)


def test_read_checkpoint_and_load_state_allow_only_frozen_keys_missing(tmp_path):
    model = WithText()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("text_encoder.")}
    torch.save({"model": state, "step": 3}, tmp_path / "c.pt")
    ckpt = read_checkpoint(tmp_path / "c.pt")
    assert ckpt["step"] == 3
    load_model_state(WithText(), ckpt["model"])
    with pytest.raises(CheckpointError, match="unexpected"):
        load_model_state(WithText(), {**state, "extra": torch.zeros(1)})
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.pt")


def test_load_encoder_init_finds_the_encoder_by_its_keys(tmp_path):
    from simcrop.model.vit3d import build_vit

    tiny = {"embed_dim": 48, "depth": 1, "num_heads": 3}
    torch.manual_seed(0)
    source = build_vit(tiny, img_size=(32, 32, 16), patch_size=(16, 16, 8))
    state = {f"mae.encoder.{k}": v for k, v in source.state_dict().items()}
    state["decoder.weight"] = torch.zeros(1)
    assert encoder_prefix(state) == "mae.encoder."
    torch.save({"model": state}, tmp_path / "ckpt.pt")
    torch.manual_seed(1)
    target = build_vit(tiny, img_size=(32, 32, 16), patch_size=(16, 16, 8))
    assert load_encoder_init(target, tmp_path / "ckpt.pt") == ["decoder.weight"]
    assert torch.equal(target.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
