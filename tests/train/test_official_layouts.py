"""Interop with the official SimCroP code, checked without that code: `--init` reads the MAE-style checkpoints of
the authors' pre-training code (written here with torch.save in exactly their layout: `{"model", "optimizer",
"epoch", "scaler", "args"}`, decoder and text keys beside the encoder's, an argparse.Namespace under `args`)
without unpickling anything else, keeps the model's own position table when a file's is another kind, and
`UNETR(official_vit=True)` computes what the official UNETR's ViT computes from the same file (its forward
re-implemented below from the documented steps)."""
from __future__ import annotations

import argparse
import logging
import math
import pathlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from simcrop.model.pos_embed import build_pos_embed
from simcrop.model.unetr import UNETR
from simcrop.model.vit3d import build_vit
from simcrop.model.weights import load_encoder_init

IMG, PATCH = (64, 64, 32), (16, 16, 8)           # a 4 x 4 x 4 grid: cubic, as the official patchify3D requires
TINY = {"embed_dim": 48, "depth": 2, "num_heads": 3}
LOGGER = "simcrop.model.weights"


def tiny_vit(pos_embed: str = "3d_sincos", seed: int = 0, trained_norm: bool = True):
    torch.manual_seed(seed)
    vit = build_vit(TINY, img_size=IMG, patch_size=PATCH, pos_embed=pos_embed)
    if trained_norm:                              # as pre-training leaves them, unlike a fresh LayerNorm
        with torch.no_grad():
            vit.norm.weight.normal_(1.0, 0.3)
            vit.norm.bias.normal_(0.0, 0.3)
            vit.cls_token.normal_(0.0, 0.5)
    return vit


def mae_style_checkpoint(encoder) -> dict:
    """What the authors' MAE-style `save_model` writes: the whole pre-training model's state dict (encoder
    keys at the top level, decoder and text towers beside them), optimizer, epoch, scaler state, args."""
    C, g = encoder.embed_dim, torch.Generator().manual_seed(1)
    model = dict(encoder.state_dict())
    model.update({
        "mask_token": torch.randn(1, 1, 32, generator=g),
        "decoder_embed.weight": torch.randn(32, C, generator=g), "decoder_embed.bias": torch.zeros(32),
        "decoder_pos_embed": torch.randn(1, 65, 32, generator=g),
        "decoder_norm.weight": torch.ones(32), "decoder_norm.bias": torch.zeros(32),
        "decoder_pred_layer.weight": torch.randn(2048, 32, generator=g), "decoder_pred_layer.bias": torch.zeros(2048),
        "bert_encoder.embeddings.word_embeddings.weight": torch.randn(10, C, generator=g),
        "bert_feature_proj.dense_to_hidden.weight": torch.randn(C, C, generator=g),
        "regression_head.weight": torch.randn(1, C, generator=g),
    })
    for part, shape in (("norm1.weight", (32,)), ("attn.qkv.weight", (96, 32)), ("attn.proj.weight", (32, 32)),
                        ("mlp.fc1.weight", (128, 32)), ("mlp.fc2.weight", (32, 128))):
        model[f"decoder_blocks.0.{part}"] = torch.randn(*shape, generator=g)
    params = [torch.nn.Parameter(torch.randn(3, generator=g)), torch.nn.Parameter(torch.randn(2, generator=g))]
    optimizer = torch.optim.AdamW(params, lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05)
    sum(p.sum() for p in params).backward()
    optimizer.step()
    parser = argparse.ArgumentParser()
    for name, default in (("--batch_size", 4), ("--epochs", 100), ("--model", "mae_vit_base_patch16"),
                          ("--mask_ratio", 0.75), ("--blr", 1.5e-4), ("--output_dir", "./output"), ("--seed", 0),
                          ("--resume", ""), ("--device", "cuda"), ("--lr", None)):
        parser.add_argument(name, default=default)
    parser.add_argument("--norm_pix_loss", action="store_true")
    parser.add_argument("--input_size", default=(224, 224, 112), nargs=3, type=int)
    args = parser.parse_args([])
    args.distributed, args.world_size, args.rank, args.gpu = False, 1, 0, 0
    return {"model": model, "optimizer": optimizer.state_dict(), "epoch": 99,
            "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                       "_growth_tracker": 7}, "args": args}


def _records(caplog, level):
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == level]


def test_mae_style_checkpoint_inits_the_encoder(tmp_path, caplog):
    source = tiny_vit(seed=0)
    ckpt = mae_style_checkpoint(source)
    torch.save(ckpt, tmp_path / "checkpoint-99.pth")
    with pytest.raises(Exception):                    # what stopped `--init` before: args is not a tensor
        torch.load(tmp_path / "checkpoint-99.pth", weights_only=True)
    fresh = tiny_vit(seed=1)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        left = load_encoder_init(fresh, tmp_path / "checkpoint-99.pth")
    for k, v in source.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    assert left == sorted(set(ckpt["model"]) - set(source.state_dict()))
    assert not _records(caplog, logging.WARNING)
    (line,) = _records(caplog, logging.INFO)          # the rest named in one log line
    message = line.getMessage()
    for part in (f"loaded {len(source.state_dict())} encoder tensors", f"left out {len(left)} other keys",
                 "decoder_blocks.* (5)", "mask_token", "bert_encoder.* (1)", "decoder_pos_embed",
                 "top-level entries not used: args, epoch, optimizer, scaler"):
        assert part in message, (part, message)


def test_mae_style_checkpoint_with_a_missing_block_is_refused(tmp_path):
    ckpt = mae_style_checkpoint(tiny_vit())
    del ckpt["model"]["blocks.1.attn.proj.weight"]
    torch.save(ckpt, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="blocks.1.attn.proj.weight"):
        load_encoder_init(tiny_vit(seed=1), tmp_path / "broken.pth")


MARKER: list = []


def _side_effect(*args):
    MARKER.append(args)
    return "ran"


class _Trap:
    """Unpickling this with the real pickle would call `_side_effect`."""

    def __reduce__(self):
        return _side_effect, ("unpickled",)


def test_args_holding_other_classes_are_read_without_unpickling_them(tmp_path, caplog):
    source = tiny_vit()
    ckpt = mae_style_checkpoint(source)
    ckpt["args"].output_dir = pathlib.PurePosixPath("/runs/pretrain")
    ckpt["args"].trap = _Trap()
    ckpt["args"].warmup = np.float64(0.5)
    torch.save(ckpt, tmp_path / "checkpoint.pth")
    MARKER.clear()
    fresh = tiny_vit(seed=1)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        load_encoder_init(fresh, tmp_path / "checkpoint.pth")
    assert MARKER == []                               # nothing named in the file was called
    assert torch.equal(fresh.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    (line,) = _records(caplog, logging.INFO)
    assert "_side_effect" in line.getMessage() and "pathlib.PurePosixPath" in line.getMessage()


@pytest.mark.parametrize("model_kind, file_kind", [("3d_sincos", "2d_legacy"), ("2d_legacy", "3d_sincos")])
def test_a_file_table_of_another_kind_is_not_copied(tmp_path, caplog, model_kind, file_kind):
    source = tiny_vit(file_kind)
    torch.save({"model": source.state_dict()}, tmp_path / "encoder.pt")
    fresh = tiny_vit(model_kind, seed=1)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        load_encoder_init(fresh, tmp_path / "encoder.pt")
    (warning,) = _records(caplog, logging.WARNING)
    message = warning.getMessage()
    assert f"position table is {file_kind} but this model's is {model_kind}" in message
    assert f"kept the model's {model_kind} table" in message and f"model.pos_embed: {file_kind}" in message
    torch.testing.assert_close(fresh.pos_embed, build_pos_embed(model_kind, fresh.grid_size, 48), rtol=0, atol=0)
    assert torch.equal(fresh.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):                  # same kind: no warning
        load_encoder_init(tiny_vit(file_kind, seed=2), tmp_path / "encoder.pt")
    assert not _records(caplog, logging.WARNING)


def test_an_unknown_file_table_is_named_and_not_copied(tmp_path, caplog):
    state = tiny_vit().state_dict()
    state["pos_embed"] = torch.randn_like(state["pos_embed"])
    torch.save({"model": state}, tmp_path / "encoder.pt")
    fresh = tiny_vit(seed=1)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        load_encoder_init(fresh, tmp_path / "encoder.pt")
    (warning,) = _records(caplog, logging.WARNING)
    assert "neither 3d_sincos nor 2d_legacy for the 4x4x4 patch grid" in warning.getMessage()
    assert "kept the model's 3d_sincos table" in warning.getMessage()
    assert torch.equal(fresh.pos_embed, build_pos_embed("3d_sincos", fresh.grid_size, 48))


# ---- the official UNETR's ViT, re-implemented from its documented steps (not from our modules) ----

def official_table(grid, dim) -> torch.Tensor:
    """`create_sin_cos_position_embedding(h, w, d, C)`: channel 2i = sin(h f_i), 2i + 1 = cos(w f_i),
    f_i = exp(-2i ln(10000) / C); depth ignored; flattened h-major, d-minor; no CLS row."""
    gh, gw, gd = grid
    div = np.exp(np.arange(0, dim, 2) * -(math.log(10000.0) / dim))
    pe = np.zeros((gh, gw, gd, dim))
    for h in range(gh):
        for w in range(gw):
            pe[h, w, :, 0::2] = np.sin(h * div)
            pe[h, w, :, 1::2] = np.cos(w * div)
    return torch.tensor(pe, dtype=torch.float32).reshape(1, gh * gw * gd, dim)


def official_unetr_vit(file_state: dict, x: torch.Tensor, heads: int):
    """Its main.py loads every file key the ViT has except cls_token and pos_embed (so not our `norm.*`: the
    ViT has a fresh `fc_norm`); its forward: patchify3D (einsum 'nchpwqdr->nhwdpqrc'), the Conv3d applied to
    each patch, + the table, timm blocks without a CLS token, fc_norm. Returns (out, hidden states)."""
    (ph, pw, pd), B = PATCH, x.shape[0]
    gh, gw, gd = (s // p for s, p in zip(x.shape[2:], PATCH))
    patches = torch.einsum("nchpwqdr->nhwdpqrc", x.reshape(B, 1, gh, ph, gw, pw, gd, pd))
    patches = patches.reshape(B * gh * gw * gd, ph, pw, pd, 1).permute(0, 4, 1, 2, 3)
    w, b = file_state["patch_embed.proj.weight"], file_state["patch_embed.proj.bias"]
    C = w.shape[0]
    t = F.conv3d(patches, w, b, stride=PATCH).reshape(B, gh * gw * gd, C) + official_table((gh, gw, gd), C)
    hidden = []
    for i in range(sum(k.endswith("attn.qkv.weight") for k in file_state)):
        p = {k[len(f"blocks.{i}."):]: v for k, v in file_state.items() if k.startswith(f"blocks.{i}.")}
        y = F.layer_norm(t, (C,), p["norm1.weight"], p["norm1.bias"], eps=1e-6)
        q, k, v = F.linear(y, p["attn.qkv.weight"], p["attn.qkv.bias"]).reshape(B, -1, 3, heads, C // heads) \
            .permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-2, -1) * (C // heads) ** -0.5, dim=-1) @ v
        t = t + F.linear(a.transpose(1, 2).reshape(B, -1, C), p["attn.proj.weight"], p["attn.proj.bias"])
        y = F.layer_norm(t, (C,), p["norm2.weight"], p["norm2.bias"], eps=1e-6)
        t = t + F.linear(F.gelu(F.linear(y, p["mlp.fc1.weight"], p["mlp.fc1.bias"])), p["mlp.fc2.weight"],
                         p["mlp.fc2.bias"])
        hidden.append(t)
    return F.layer_norm(t, (C,), eps=1e-6), hidden


@pytest.mark.parametrize("pos_embed", ["3d_sincos", "2d_legacy"])
def test_official_vit_path_computes_the_official_unetr_vit(tmp_path, pos_embed):
    source = tiny_vit(pos_embed)                     # trained-like norm and CLS token
    torch.save({"model": source.state_dict()}, tmp_path / "encoder.pt")
    x = torch.rand(2, 1, *IMG, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        ref_out, ref_hidden = official_unetr_vit(source.state_dict(), x, heads=3)
        encoders = {}
        for official in (True, False):
            enc = tiny_vit(pos_embed, seed=5)
            load_encoder_init(enc, tmp_path / "encoder.pt")
            encoders[official] = UNETR(enc, 2, feature_size=8, official_vit=official).eval()
        out, hidden = encoders[True].encode(x)
        assert out.shape == ref_out.shape == (2, 64, 48)                   # patch tokens only
        for mine, ref in zip(hidden, ref_hidden, strict=True):
            torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
        # the default path (CLS token, the configured table, the trained norm) is not what the official runs
        out, hidden = encoders[False].encode(x)
        assert (hidden[-1][:, 1:] - ref_hidden[-1]).abs().max() > 1e-2
        assert (out[:, 1:] - ref_out).abs().max() > 1e-2
