"""The splitter against the hand-made gold split (tests/text/gold, scored by benchmarks/sentences_gold.py).

Gold: the 40 real CT-RATE reports of ../shared/data (as character spans, the text is not copied here),
15 US-style and 15 CTRG-style reports written by hand (the last 5 of each written after the rules, as a
held-out check). Goal of issue 11: boundary F1 >= 0.98.
"""
import importlib.util
import json
import re

import pytest


@pytest.fixture(scope="module")
def gold_bench(repo_root):
    spec = importlib.util.spec_from_file_location("sentences_gold", repo_root / "benchmarks" / "sentences_gold.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gold(gold_bench, shared_data):
    return gold_bench.load_gold(shared_data)


def test_gold_is_well_formed(gold, gold_bench):
    """Every gold sentence lies in its report, in order (load_gold checks), clean and non-empty."""
    counts = {style: sum(r["style"] == style for r in gold) for style in gold_bench.STYLES}
    assert counts == {"us": 15, "ctrg": 15, "ctrate": 40}
    assert len({(r["style"], r["id"]) for r in gold}) == len(gold)
    for report in gold:
        ends = [end for _, end in report["spans"]]
        starts = [start for start, _ in report["spans"]]
        assert all(a <= b for a, b in zip(ends, starts[1:])), report["id"]       # no overlap
        for sentence in report["sentences"]:
            text = sentence["text"]
            assert text == text.strip() and "\n" not in text and re.search(r"\w", text), (report["id"], text)
            assert text[0] not in "\"“”•" and text[-1] not in "\"“”•", (report["id"], text)


def test_gold_locate_rejects_a_sentence_out_of_order(gold_bench):
    with pytest.raises(ValueError, match="not found in order"):
        gold_bench._locate("First one. Second one.", ["Second one.", "First one."])


def test_scores_of_a_perfect_and_a_merged_split(gold_bench):
    report = {"style": "us", "id": "x", "text": "LUNGS: Clear. No effusion.",
              "sentences": [{"text": "Clear.", "header": "lungs"}, {"text": "No effusion.", "header": "lungs"}],
              "spans": gold_bench._locate("LUNGS: Clear. No effusion.", ["Clear.", "No effusion."])}
    perfect = [{"text": "Clear.", "start": 7, "end": 13, "header": "lungs"},
               {"text": "No effusion.", "start": 14, "end": 26, "header": "lungs"}]
    glued = [{"text": "LUNGS: Clear.", "start": 0, "end": 13}, {"text": "No effusion.", "start": 14, "end": 26}]
    s = gold_bench.score([report], [perfect])["all"]
    assert s["boundary_f1"] == s["sentence_f1"] == s["header_acc"] == 1.0
    s = gold_bench.score([report], [glued])["all"]
    assert s["boundary_p"] == s["boundary_r"] == 0.75 and s["sentence_f1"] == 0.5
    assert s["header_acc"] == 0.0


def test_splitter_meets_the_gold(gold, gold_bench, splitter):
    scores = gold_bench.score(gold, gold_bench.predict(gold_bench.load_module(None), gold, splitter))
    report = json.dumps({k: {m: round(v, 3) for m, v in s.items() if isinstance(v, float)} for k, s in scores.items()})
    assert scores["all"]["boundary_f1"] >= 0.98, report
    assert scores["all"]["sentence_f1"] >= 0.98, report
    for style in gold_bench.STYLES:
        assert scores[style]["boundary_f1"] >= 0.97, report
        assert scores[style]["sentence_f1"] >= 0.95, report
    assert scores["us"]["header_acc"] >= 0.95 and scores["ctrg"]["header_acc"] >= 0.95, report
