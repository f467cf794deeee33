"""Loading checkpoints and computing patch / sentence features as training computes them."""
from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F

from simcrop.config import ModelConfig
from simcrop.data.datasets import PretrainDataset
from simcrop.evaluate import embed
from simcrop.evaluate.embed import (NotApplicableError, cached_volume_features, encode_reports, encode_sentences,
                                    encode_volumes, feature_kind, load_crop, load_mask_crop, load_model)
from simcrop.evaluate.run import run_task
from simcrop.model.alignment import sentence_features
from simcrop.model.factory import build_collate


def _paths(run, ids=("t0_a_1", "t1_a_1", "t2_a_1")):
    return [run / "preprocessed" / "volumes" / f"{v}.nii.gz" for v in ids]


@pytest.fixture(scope="module")
def simcrop_model(checkpoints, text_encoder):
    return load_model(checkpoints["simcrop"], text_encoder=text_encoder)


def test_load_model_restores_the_saved_weights(simcrop_model, checkpoints):
    model, cfg = simcrop_model
    assert not model.training and cfg.model.topk == 4 and feature_kind(model) == "patch"
    saved = torch.load(checkpoints["simcrop"], weights_only=True)["model"]
    for key, value in model.state_dict().items():
        if key in saved:
            assert torch.equal(value, saved[key]), key


def test_crop_is_the_datasets_eval_crop_and_mask_stays_aligned(tiny_run):
    ds = PretrainDataset(tiny_run / "manifest.csv", tiny_run / "sentences.jsonl", tiny_run / "preprocessed",
                         tiny_run / "qc.csv", split="test", crop_size=(32, 32, 16), augment=False)
    for i, item in enumerate(ds.items):
        assert torch.equal(load_crop(item["path"], (32, 32, 16)), ds[i]["image"])
    # larger crop than the volume along z: the image is padded, the mask with background, same geometry
    for crop in [(32, 32, 16), (32, 32, 24)]:
        image = load_crop(_paths(tiny_run)[0], crop)[0]
        mask = load_mask_crop(tiny_run / "preprocessed" / "masks" / "t0_a_1.lesion.nii.gz", crop)
        assert mask.shape == crop and int(mask.sum()) > 0
        assert torch.equal((image > 0)[mask > 0], torch.ones(int((mask > 0).sum()), dtype=torch.bool))
        core = slice(4, 20) if crop[2] == 24 else slice(None)
        assert torch.equal((image[:, :, core] > 0), (mask[:, :, core] > 0))   # outside the pad: equal


def test_encode_volumes_unmasked_normalised_patch_features(simcrop_model, tiny_run):
    model, _ = simcrop_model
    feats = encode_volumes(model, _paths(tiny_run), batch_size=2, progress=False)
    assert feats.shape == (3, 64, 32)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(3, 64), atol=1e-5)
    with torch.no_grad():
        image = load_crop(_paths(tiny_run)[1], (32, 32, 16))[None]
        ref = F.normalize(model.patch_head(model.mae.encoder(image)[:, 1:]), dim=-1)
    assert torch.allclose(feats[1], ref[0], atol=1e-5)


def test_sentence_features_in_report_context_match_training(simcrop_model, tiny_run, text_encoder):
    model, _ = simcrop_model
    ds = PretrainDataset(tiny_run / "manifest.csv", tiny_run / "sentences.jsonl", tiny_run / "preprocessed",
                         tiny_run / "qc.csv", split="test", crop_size=(32, 32, 16), augment=False)
    samples = [ds[i] for i in range(len(ds))]
    out = encode_reports(model, [dict(it) for it in ds.items], batch_size=3, max_tokens=64, progress=False)
    batch = build_collate(ModelConfig(text_max_tokens=64), tokenizer=text_encoder.tokenizer)(samples)
    with torch.no_grad():
        tokens = model.token_head(model.text_encoder(batch["input_ids"], batch["attention_mask"]))
        ref, s2r = sentence_features(tokens, batch["token_sentence"])
    assert torch.allclose(out["features"], F.normalize(ref, dim=-1), atol=1e-5)
    assert torch.equal(out["sentence_to_report"], s2r)
    assert out["sentence_index"].tolist() == [j for it in ds.items for j in range(len(it["sentences"]))]


def test_truncated_sentences_are_dropped_and_indices_say_which(simcrop_model):
    model, _ = simcrop_model
    out = encode_reports(model, [["Short one.", "A second sentence that is much longer than the first one is.",
                                  "Third."]], max_tokens=6, progress=False)
    assert out["sentence_index"].tolist() == [0, 1] and out["features"].shape == (2, 32)
    single = encode_sentences(model, ["Short one.", "Third."])
    assert single.shape == (2, 32) and torch.allclose(single.norm(dim=-1), torch.ones(2), atol=1e-5)
    with pytest.raises(ValueError, match="empty"):
        encode_sentences(model, ["  "])


def test_feature_cache_is_reused_and_invalidated_by_a_new_checkpoint(simcrop_model, checkpoints, tiny_run,
                                                                      tmp_path, monkeypatch):
    model, _ = simcrop_model
    paths = _paths(tiny_run)[:2]
    first = cached_volume_features(model, checkpoints["simcrop"], paths, tmp_path, progress=False)
    assert len(list(tmp_path.glob("volumes-*.pt"))) == 1

    def boom(*args, **kwargs):
        raise AssertionError("recomputed despite the cache")

    monkeypatch.setattr(embed, "encode_volumes", boom)
    assert torch.equal(cached_volume_features(model, checkpoints["simcrop"], paths, tmp_path), first)
    stat = os.stat(checkpoints["simcrop"])
    os.utime(checkpoints["simcrop"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="recomputed"):
        cached_volume_features(model, checkpoints["simcrop"], paths, tmp_path)
    with pytest.raises(AssertionError, match="recomputed"):                        # another volume list
        cached_volume_features(model, checkpoints["simcrop"], paths[:1], tmp_path)


def test_mae_is_not_applicable_and_run_task_writes_that(checkpoints, tiny_run, tmp_path, text_encoder):
    model, _ = load_model(checkpoints["mae"])
    with pytest.raises(NotApplicableError, match="no image-text alignment"):
        feature_kind(model)
    for task in ("zeroshot", "retrieval", "grounding"):
        out = tmp_path / f"{task}.json"
        metrics = run_task(task, None, checkpoints["mae"], tiny_run, out, text_encoder=text_encoder)
        assert json.loads(out.read_text()) == metrics and metrics["applicable"] is False
    with pytest.raises(ValueError, match="unknown evaluation task"):
        run_task("segment", None, checkpoints["mae"], tiny_run, tmp_path / "x.json")


def test_clip_baseline_gets_one_global_feature(checkpoints, tiny_run, text_encoder):
    model, _ = load_model(checkpoints["clip"], text_encoder=text_encoder)
    assert feature_kind(model) == "global"
    feats = encode_volumes(model, _paths(tiny_run), progress=False)
    assert feats.shape == (3, 1, 32)
    out = encode_reports(model, [["One.", "Two."], ["Three."]], progress=False)
    assert out["features"].shape == (2, 32) and out["sentence_to_report"].tolist() == [0, 1]
