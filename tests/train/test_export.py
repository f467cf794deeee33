"""Encoder export under official timm key names, and strict `init` loading."""
from __future__ import annotations

import pytest
import torch

from simcrop.model.vit3d import build_vit
from simcrop.train.checkpoint import save_checkpoint
from simcrop.model.weights import encoder_prefix, encoder_state, load_encoder_init
from simcrop.train.export import export_encoder
from train_helpers import TinyMAE

IMG = (32, 32, 16)


def official_keys(depth: int) -> set[str]:
    """Backbone keys of timm / official `models_vit.vit_base_patch16` (its head aside)."""
    keys = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"}
    for i in range(depth):
        for part in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            keys |= {f"blocks.{i}.{part}.weight", f"blocks.{i}.{part}.bias"}
    return keys


def test_prefix_is_found_from_the_keys():
    state = TinyMAE().state_dict()
    assert encoder_prefix(state) == "mae.encoder."
    assert encoder_prefix({f"module.{k}": v for k, v in state.items()}) == "module.mae.encoder."
    assert encoder_prefix(build_vit({"embed_dim": 48, "depth": 1, "num_heads": 3}, IMG).state_dict()) == ""
    with pytest.raises(ValueError, match="no ViT encoder"):
        encoder_prefix({"decoder.pred.weight": torch.zeros(1)})


def test_vit_base_export_loads_strictly_into_official_layout(tmp_path):
    torch.manual_seed(0)
    model = TinyMAE(IMG, vit="vit_base")
    save_checkpoint(tmp_path / "last.pt", model, step=7, config_dict={"model": {"vit": "vit_base"}})
    export_encoder(tmp_path / "last.pt", tmp_path / "encoder.pt")
    exported = torch.load(tmp_path / "encoder.pt", weights_only=True)
    assert set(exported["model"]) == official_keys(12)
    assert exported["step"] == 7 and exported["config"]["model"]["vit"] == "vit_base"
    fresh = build_vit("vit_base", img_size=IMG)
    fresh.load_state_dict(exported["model"], strict=True)
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    assert not list(tmp_path.glob("*tmp*"))


def test_init_from_export_gives_identical_encoder(tmp_path):
    torch.manual_seed(0)
    trained = TinyMAE()
    save_checkpoint(tmp_path / "last.pt", trained)
    export_encoder(tmp_path / "last.pt", tmp_path / "encoder.pt")
    torch.manual_seed(1)
    fresh = TinyMAE()
    assert not torch.equal(fresh.encoder.blocks[0].attn.qkv.weight, trained.encoder.blocks[0].attn.qkv.weight)
    load_encoder_init(fresh.encoder, tmp_path / "encoder.pt")
    for k, v in trained.encoder.state_dict().items():
        assert torch.equal(fresh.encoder.state_dict()[k], v), k
    # a full training checkpoint works as init too (the encoder is found inside)
    load_encoder_init(TinyMAE().encoder, tmp_path / "last.pt")


def test_init_is_strict_but_drops_classifier_heads(tmp_path):
    state = encoder_state(TinyMAE().state_dict())
    torch.save({"model": {**state, "head.weight": torch.zeros(2, 48), "head.bias": torch.zeros(2)}},
               tmp_path / "with_head.pt")
    assert load_encoder_init(TinyMAE().encoder, tmp_path / "with_head.pt") == ["head.bias", "head.weight"]
    del state["blocks.1.mlp.fc2.bias"]
    torch.save({"model": state}, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="blocks.1.mlp.fc2.bias"):
        load_encoder_init(TinyMAE().encoder, tmp_path / "missing.pt")
    torch.save({"model": encoder_state(TinyMAE(vit={"embed_dim": 96, "depth": 2, "num_heads": 3}).state_dict())},
               tmp_path / "wide.pt")
    with pytest.raises(ValueError, match="size mismatch"):
        load_encoder_init(TinyMAE().encoder, tmp_path / "wide.pt")


def test_init_from_a_training_checkpoint_names_what_it_leaves_out(tmp_path, caplog):
    """The decoder beside the encoder is left out, returned, and named in one log line."""
    import logging
    torch.manual_seed(0)
    model = TinyMAE()
    save_checkpoint(tmp_path / "last.pt", model, step=3)
    with caplog.at_level(logging.INFO, logger="simcrop.model.weights"):
        left = load_encoder_init(TinyMAE().encoder, tmp_path / "last.pt")
    decoder = sorted(k for k in model.state_dict() if not k.startswith("mae.encoder."))
    assert decoder and left == decoder
    (line,) = [r.getMessage() for r in caplog.records if r.name == "simcrop.model.weights"]
    assert "under prefix 'mae.encoder.'" in line and f"left out {len(decoder)} other keys: mae.decoder" in line
