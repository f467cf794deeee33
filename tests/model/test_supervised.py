"""The supervised upper bound for the probe: the same ViT trained on the manifest's labels (issue 9)."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from simcrop.config import ModelConfig, from_dict
from simcrop.data.labels import CTRATE_LABELS
from simcrop.data.manifest import read_manifest, write_manifest
from simcrop.model import build_pretrain_model
from simcrop.model.baselines import SupervisedPretrain
from simcrop.model.objectives import OBJECTIVES
from simcrop.model.vit3d import build_vit
from simcrop.train.pretrain import pretrain
from simcrop.evaluate.probe_features import build_encoder
from train_helpers import write_run

TINY_VIT = dict(embed_dim=48, depth=2, num_heads=3)


def tiny_cfg(**overrides) -> ModelConfig:
    return ModelConfig(**{**dict(objective="supervised", vit=TINY_VIT, img_size=[32, 32, 16],
                                 patch_size=[8, 8, 4]), **overrides})


def test_config_and_factory_accept_supervised():
    cfg = from_dict({"model": {"objective": "supervised"},
                     "experiment": {"objectives": ["random", "mae", "simcrop", "supervised"]}})
    assert cfg.model.objective == "supervised" and "supervised" in cfg.experiment.objectives
    assert "supervised" in OBJECTIVES
    model = build_pretrain_model(tiny_cfg())
    assert isinstance(model, SupervisedPretrain) and model.n_labels == len(CTRATE_LABELS) == 18
    assert not hasattr(model, "text_encoder")                     # no text side: nothing loaded
    reference = build_vit(TINY_VIT, img_size=(32, 32, 16), patch_size=(8, 8, 4))
    assert model.encoder.state_dict().keys() == reference.state_dict().keys()


def test_loss_falls_when_overfitting_fixed_labels():
    torch.manual_seed(0)
    model = build_pretrain_model(tiny_cfg())
    g = torch.Generator().manual_seed(1)
    batch = {"image": torch.rand(4, 1, 32, 32, 16, generator=g) * 2 - 1,
             "labels": (torch.rand(4, 18, generator=g) < 0.3).float()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for _ in range(30):
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        assert set(out["losses"]) == {"supervised"} and not out["losses"]["supervised"].requires_grad
        history.append(out["loss"].item())
    assert history[-1] < 0.5 * history[0], history
    assert all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad)


def test_errors_name_the_missing_or_misshapen_labels():
    model = build_pretrain_model(tiny_cfg())
    image = torch.zeros(2, 1, 32, 32, 16)
    with pytest.raises(ValueError, match="labels=True"):
        model({"image": image})
    with pytest.raises(ValueError, match=r"expected \(B, 18\)"):
        model({"image": image, "labels": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="n_labels"):
        SupervisedPretrain(model.encoder, n_labels=0)


def _label_train_rows(manifest, unlabelled=()):
    frame = read_manifest(manifest)
    frame["labels"] = [
        "" if split != "train" or vid in unlabelled
        else json.dumps({name: int((i + k) % 3 == 0) for k, name in enumerate(CTRATE_LABELS)})
        for i, (vid, split) in enumerate(zip(frame["volume_id"], frame["split"]))]
    write_manifest(manifest, frame)


def test_pretrain_run_exports_an_encoder_the_others_load(tmp_path, caplog):
    paths = write_run(tmp_path / "run", n=4)
    _label_train_rows(paths["manifest"], unlabelled={"vol3"})
    values = {"run": "t", "results_dir": str(tmp_path / "results"),
              "model": {"objective": "supervised", "vit": "vit_demo", "img_size": [32, 32, 16],
                        "patch_size": [16, 16, 8]},
              "pretrain": {"steps": 4, "batch_size": 2, "warmup_steps": 1, "log_every": 2, "checkpoint_every": 100,
                           "num_workers": 0, "lr": 1e-3, "min_lr": 1e-5}}
    cfg = from_dict(values)
    with caplog.at_level(logging.INFO, logger="simcrop.data.datasets"):
        summary = pretrain(cfg, tmp_path / "run", tmp_path / "out", progress=False, device="cpu")
    assert summary["step"] == 4 and summary["done"]
    assert "kept 3" in caplog.text and "1 no labels" in caplog.text
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics["losses"]) == {"loss", "supervised"}
    exported = torch.load(tmp_path / "out" / "encoder.pt", weights_only=True)["model"]
    reference = build_vit("vit_demo", img_size=(32, 32, 16), patch_size=(16, 16, 8))
    assert exported.keys() == reference.state_dict().keys()           # no head / fc_norm keys
    probe_encoder = build_encoder(cfg.model, encoder_path=tmp_path / "out" / "encoder.pt")
    for key, value in probe_encoder.state_dict().items():
        assert torch.equal(value, exported[key]), key
    built = []

    def factory(model_cfg):
        built.append(build_pretrain_model(model_cfg))
        return built[-1]

    mae = from_dict({**values, "model": {**values["model"], "objective": "mae"},
                     "pretrain": {**values["pretrain"], "init": str(tmp_path / "out" / "encoder.pt")}})
    pretrain(mae, tmp_path / "run", tmp_path / "mae", factory, max_steps=0, progress=False, device="cpu")
    for key, value in built[-1].encoder.state_dict().items():           # --init into another objective
        assert torch.equal(value, exported[key]), key
