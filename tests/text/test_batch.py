from __future__ import annotations

import logging

import pytest
import torch

from simcrop.text.batch import ReportBatcher, batch_seed, report_text
from simcrop.text.sentences import split_report

FINDINGS = ("The heart is normal in size. A 12 mm nodule is seen in the right upper lobe, approx. 3.5 cm "
            "from the hilum. No pleural effusion.")
IMPRESSIONS = "Right upper lobe nodule."


def sample(splitter, findings=FINDINGS, impressions=IMPRESSIONS, volume_id="train_1_a_1", lesions=()):
    sents = [dict(section="findings", **s, lesion_ids=list(lesions)) for s in split_report(findings, splitter)]
    sents += [dict(section="impressions", **s, lesion_ids=[]) for s in split_report(impressions, splitter)]
    return dict(image=torch.zeros(1, 8, 8, 4), volume_id=volume_id, findings=findings, impressions=impressions,
                sentences=sents)


def squash(text: str) -> str:
    return "".join(text.lower().split())


def test_tokens_map_to_their_sentences(tokenizer, splitter):
    s = sample(splitter, lesions=["L1"])
    other = sample(splitter, "Mild emphysema.", "", lesions=["L1"])
    batch = ReportBatcher(tokenizer, max_tokens=64, mask_prob=0.5)([s, other])
    findings = [r for r in s["sentences"] if r["section"] == "findings"]
    assert len(findings) == 3                                                # "approx." kept inside
    ts = batch["token_sentence"]
    assert ts.shape == batch["input_ids"].shape and ts.dtype == torch.int64
    for i, rec in enumerate(findings):
        ids = batch["input_ids"][0][ts[0] == i]
        assert squash(tokenizer.decode(ids)) == squash(rec["text"])
    special = batch["attention_mask"].bool() & torch.isin(batch["input_ids"], torch.tensor(tokenizer.all_special_ids))
    assert (ts[special] == -1).all() and (ts[batch["attention_mask"] == 0] == -1).all()
    rest = batch["input_ids"][0][(ts[0] == -1) & batch["findings_mask"].logical_not()[0]
                                 & batch["attention_mask"][0].bool() & ~special[0]]
    assert squash(tokenizer.decode(rest)) == squash(IMPRESSIONS)             # impression tokens: -1
    assert squash(tokenizer.decode(batch["input_ids"][0][batch["findings_mask"][0]])) == squash(FINDINGS)
    assert batch["image"].shape == (2, 1, 8, 8, 4) and batch["volume_id"][1] == "train_1_a_1"
    assert int(ts[1].max()) == 0 and batch["dropped_sentences"] == 0 == batch["truncated_reports"]
    assert batch["sentence_lesions"] == [[["L1"]] * 3, [["L1"]]]
    assert report_text("a", "") == "a" and report_text("a", "b") == "a b"


def test_long_sentence_truncated_with_warning(tokenizer, splitter, caplog):
    long = "The " + " ".join(["consolidation"] * 600) + " is large. Small effusion."
    with caplog.at_level(logging.WARNING, logger="simcrop.text.batch"):
        batch = ReportBatcher(tokenizer, max_tokens=32, mask_prob=0.75)([sample(splitter, long, "Pneumonia.")])
    assert batch["input_ids"].shape == (1, 32)
    assert (batch["token_sentence"][0, 1:31] == 0).all()                      # the long sentence, cut
    assert batch["dropped_sentences"] == 1 and batch["truncated_reports"] == 1
    assert batch["sentence_lesions"] == [[[]]]
    assert "truncated" in caplog.text and "dropped" in caplog.text


def test_limit_above_tokenizer_max_is_clamped(tokenizer, splitter):
    long = " ".join(["nodule"] * 700) + "."
    batch = ReportBatcher(tokenizer, max_tokens=4096)([sample(splitter, long, "")])
    assert batch["input_ids"].shape[1] == tokenizer.model_max_length


def test_no_findings_sentences_is_a_clear_error(tokenizer, splitter):
    bad = sample(splitter, "", "Normal study.", volume_id="valid_7_b_2")
    with pytest.raises(ValueError, match="valid_7_b_2.*no Findings"):
        ReportBatcher(tokenizer, 64)([sample(splitter), bad])


def test_mlm_masking(tokenizer, splitter):
    batcher = ReportBatcher(tokenizer, max_tokens=64, mask_prob=0.75, seed=3)
    samples = [sample(splitter), sample(splitter, "Mild emphysema in both lobes.", "")]
    a = batcher(samples)
    real = a["attention_mask"].bool() & ~torch.isin(a["input_ids"], torch.tensor(tokenizer.all_special_ids))
    chosen = a["mlm_labels"] != -100
    assert not (chosen & ~real).any()                                         # specials and padding never
    assert chosen.sum(1).tolist() == [round(0.75 * int(n)) for n in real.sum(1)]
    assert (a["mlm_input_ids"][chosen] == tokenizer.mask_token_id).all()     # no 80/10/10 by default
    assert torch.equal(a["mlm_input_ids"][~chosen], a["input_ids"][~chosen])
    assert torch.equal(a["mlm_labels"][chosen], a["input_ids"][chosen])
    assert torch.equal(a["mlm_all_labels"], a["input_ids"])
    b = batcher(samples)                                                      # next call: a new mask
    assert not torch.equal(a["mlm_labels"], b["mlm_labels"])
    again = ReportBatcher(tokenizer, max_tokens=64, mask_prob=0.75, seed=3)(samples)
    assert torch.equal(again["mlm_input_ids"], a["mlm_input_ids"])           # same seed, same counter
    assert batch_seed(3, 1, 0) != batch_seed(3, 2, 0) != batch_seed(4, 1, 0)


def test_bert_mix_keeps_some_tokens(tokenizer, splitter):
    batcher = ReportBatcher(tokenizer, max_tokens=128, mask_prob=1.0, bert_mix=True)
    out = batcher([sample(splitter, " ".join(["Small nodule in the lung."] * 10), "")])
    chosen = out["mlm_labels"] != -100
    share = (out["mlm_input_ids"][chosen] == tokenizer.mask_token_id).float().mean()
    assert 0.6 < float(share) < 0.95


def test_sample_mask_seed_fixes_its_mask_whatever_the_batch(tokenizer, splitter):
    """A resumed run, another worker or another batch neighbour must not change a report's mask."""
    short = {**sample(splitter, "Mild emphysema in both lobes.", ""), "mask_seed": 11}
    long = {**sample(splitter, " ".join(["Small nodule in the right upper lobe."] * 4), ""), "mask_seed": 12}
    alone = ReportBatcher(tokenizer, max_tokens=64, seed=3)([short])
    batcher = ReportBatcher(tokenizer, max_tokens=64, seed=3)
    batcher([long])                                                           # the counter moves on
    together = batcher([long, short])                                         # padded to the long one
    n = alone["input_ids"].shape[1]
    assert torch.equal(together["mlm_labels"][1, :n], alone["mlm_labels"][0])
    assert (together["mlm_labels"][1, n:] == -100).all()
    other = ReportBatcher(tokenizer, max_tokens=64, seed=3)([{**short, "mask_seed": 99}])
    assert not torch.equal(other["mlm_labels"], alone["mlm_labels"])


def test_labels_pass_through_when_the_samples_carry_them(tokenizer, splitter):
    batcher = ReportBatcher(tokenizer, max_tokens=64, seed=0)
    plain = [sample(splitter), sample(splitter, volume_id="train_2_a_1")]
    assert "labels" not in batcher(plain)                                   # other objectives: unchanged
    labelled = [{**s, "labels": torch.tensor(v)} for s, v in zip(plain, ([1.0, 0.0, 1.0], [0.0, 0.0, 1.0]))]
    batch = batcher(labelled)
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [[1, 0, 1], [0, 0, 1]]
    assert torch.equal(batch["input_ids"], batcher(plain)["input_ids"])
    with pytest.raises(ValueError, match="1 of 2 samples carry labels"):
        batcher([labelled[0], plain[1]])
