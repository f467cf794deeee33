"""Sentence splitting against the hand-made gold split: boundary and sentence P/R/F1 per report style, speed.

    python benchmarks/sentences_gold.py                       # the splitter in simcrop/text/sentences.py
    python benchmarks/sentences_gold.py --module old.py       # another sentences.py (e.g. `git show c9591dd:...`)
    python benchmarks/sentences_gold.py --errors              # list every sentence that misses the gold

Gold (tests/text/gold/): `ctrate_gold.jsonl` splits the 40 real CT-RATE reports of ../shared/data (given as
character spans into each report, so the report text is not copied into the repository); `us_style.jsonl`
and `ctrg_style.jsonl` hold hand-written reports with their gold sentences (`text`, `header`).

Metrics, micro-averaged over reports:
- boundary P/R/F1: each sentence contributes its start and its end, measured in letters and digits from
  the start of the report (so whitespace, separators and punctuation at a sentence's edge do not count,
  but a header glued to a sentence, a hard-wrapped line cut in two or a missed split do);
- sentence P/R/F1: a predicted sentence is correct when its text, with runs of spaces and tabs collapsed
  (newlines kept), equals a gold sentence of the same report (multiset match); a dangling separator,
  a kept `\\n` or a kept header makes it wrong;
- header accuracy: share of correctly split sentences whose `header` equals the gold header (US and CTRG;
  the CT-RATE gold gives no headers).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOLD = REPO / "tests" / "text" / "gold"
SHARED_DATA = Path(os.environ.get("SIMCROP_SHARED_DATA", REPO.parent / "shared" / "data"))
STYLES = ("us", "ctrg", "ctrate")
_SPACES = re.compile(r"[ \t]+")


def normalise(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def _alnum_prefix(text: str) -> list[int]:
    """prefix[i] = letters and digits in text[:i] (a position in the report's alphanumeric stream)."""
    prefix, n = [0], 0
    for ch in text:
        n += ch.isalnum()
        prefix.append(n)
    return prefix


def _locate(text: str, sentences: list[str]) -> list[tuple[int, int]]:
    """Alphanumeric-stream (start, end) of each gold sentence, found in order; ValueError if one is not."""
    stream = "".join(ch for ch in text if ch.isalnum())
    spans, pos = [], 0
    for sentence in sentences:
        key = "".join(ch for ch in sentence if ch.isalnum())
        i = stream.find(key, pos)
        if not key or i < 0:
            raise ValueError(f"gold sentence not found in order: {sentence!r}")
        spans.append((i, i + len(key)))
        pos = i + len(key)
    return spans


def load_gold(shared_data: Path = SHARED_DATA, gold_dir: Path = GOLD) -> list[dict]:
    """[{"style", "id", "text", "sentences": [{"text", "header"}], "spans": [(start, end) alphanumeric]}]."""
    reports = []
    for style in ("us", "ctrg"):
        for line in (gold_dir / f"{style}_style.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            spans = _locate(row["text"], [s["text"] for s in row["sentences"]])
            reports.append(dict(style=style, id=row["id"], text=row["text"], sentences=row["sentences"], spans=spans))
    texts = {}
    with open(shared_data / "reports" / "ctrate_sample_reports.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            texts[row["id"]] = row["text"]
    for line in (gold_dir / "ctrate_gold.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        text = texts[row["id"]]
        prefix = _alnum_prefix(text)
        sentences, spans = [], []
        for start, end, first_words in row["sentences"]:
            if not text[start:end].startswith(first_words):
                raise ValueError(f"{row['id']}: gold span {start}:{end} does not start with {first_words!r}")
            sentences.append({"text": normalise(re.sub(r"\s*\n\s*", " ", text[start:end]))})  # headers not scored
            spans.append((prefix[start], prefix[end]))
        reports.append(dict(style="ctrate", id=row["id"], text=text, sentences=sentences, spans=spans))
    return reports


def score(reports: list[dict], predictions: list[list[dict]]) -> dict:
    """{style and "all": counts and P/R/F1}; predictions: per report the splitter's [{"text", "start", "end", ...}]."""
    totals: dict[str, Counter] = {}
    for report, predicted in zip(reports, predictions):
        prefix = _alnum_prefix(report["text"])
        pred_b = Counter()
        for s in predicted:
            pred_b.update([("s", prefix[s["start"]]), ("e", prefix[s["end"]])])
        gold_b = Counter()
        for start, end in report["spans"]:
            gold_b.update([("s", start), ("e", end)])
        gold_t = Counter(normalise(s["text"]) for s in report["sentences"])
        pred_t = Counter(normalise(s["text"]) for s in predicted)
        headers = {}
        for s in report["sentences"]:
            if "header" in s:
                headers.setdefault(normalise(s["text"]), []).append(s["header"])
        header_ok = header_n = 0
        for s in predicted:
            queue = headers.get(normalise(s["text"]))
            if queue:
                header_n += 1
                header_ok += s.get("header") == queue.pop(0)
        for key in (report["style"], "all"):
            c = totals.setdefault(key, Counter())
            c.update(reports=1, gold=sum(gold_t.values()), predicted=sum(pred_t.values()),
                     correct=sum((gold_t & pred_t).values()), b_gold=sum(gold_b.values()),
                     b_pred=sum(pred_b.values()), b_correct=sum((gold_b & pred_b).values()),
                     header_ok=header_ok, header_n=header_n)
    out = {}
    for key, c in totals.items():
        row = dict(c)
        for prefix, (tp, npred, ngold) in (("boundary", (c["b_correct"], c["b_pred"], c["b_gold"])),
                                           ("sentence", (c["correct"], c["predicted"], c["gold"]))):
            p, r = tp / max(npred, 1), tp / max(ngold, 1)
            row.update({f"{prefix}_p": p, f"{prefix}_r": r, f"{prefix}_f1": 2 * p * r / max(p + r, 1e-12)})
        row["header_acc"] = c["header_ok"] / c["header_n"] if c["header_n"] else None
        out[key] = row
    return out


def errors(reports: list[dict], predictions: list[list[dict]]) -> list[str]:
    lines = []
    for report, predicted in zip(reports, predictions):
        gold = Counter(normalise(s["text"]) for s in report["sentences"])
        pred = Counter(normalise(s["text"]) for s in predicted)
        missed, extra = gold - pred, pred - gold
        if missed or extra:
            lines.append(f"== {report['style']} {report['id']}")
            lines += [f"  gold only: {t!r}" for t in missed.elements()]
            lines += [f"  split only: {t!r}" for t in extra.elements()]
    return lines


def load_module(path: str | None):
    if path is None:
        from simcrop.text import sentences
        return sentences
    spec = importlib.util.spec_from_file_location("sentences_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def predict(module, reports: list[dict], nlp=None) -> list[list[dict]]:
    nlp = nlp or module.build_splitter()
    return [module.split_report(r["text"], nlp) for r in reports]


def seconds_per_1000(module, texts: list[str], n: int = 1000, nlp=None, repeats: int = 3) -> float:
    """Time of the manifest path (nlp.pipe + sentence_spans) over n reports cycled from texts; best of repeats."""
    nlp = nlp or module.build_splitter()
    batch = [texts[i % len(texts)] + " " * (i // len(texts)) for i in range(n)]   # distinct strings, same content
    list(module.sentence_spans(d) for d in nlp.pipe(batch[:50]))                   # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for doc in nlp.pipe(batch, batch_size=128):
            module.sentence_spans(doc)
        best = min(best, time.perf_counter() - t0)
    return best * 1000 / n


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--module", help="path of another sentences.py to score (default: simcrop.text.sentences)")
    parser.add_argument("--errors", action="store_true", help="list the sentences that miss the gold")
    parser.add_argument("--speed", type=int, default=1000, help="reports to time (0: skip)")
    args = parser.parse_args(argv)
    module = load_module(args.module)
    reports = load_gold()
    nlp = module.build_splitter()
    predictions = predict(module, reports, nlp)
    scores = score(reports, predictions)
    print(f"{'style':7} {'reports':>7} {'gold':>5} {'pred':>5} | {'boundary P':>10} {'R':>6} {'F1':>6} | "
          f"{'sentence P':>10} {'R':>6} {'F1':>6} | {'header':>6}")
    for key in (*STYLES, "all"):
        s = scores[key]
        print(f"{key:7} {s['reports']:7d} {s['gold']:5d} {s['predicted']:5d} | {s['boundary_p']:10.3f} "
              f"{s['boundary_r']:6.3f} {s['boundary_f1']:6.3f} | {s['sentence_p']:10.3f} {s['sentence_r']:6.3f} "
              f"{s['sentence_f1']:6.3f} | " + (f"{s['header_acc']:6.3f}" if s["header_acc"] is not None else "     -"))
    if args.speed:
        ctrate = [r["text"] for r in reports if r["style"] == "ctrate"]
        sec = seconds_per_1000(module, ctrate, args.speed, nlp)
        print(f"speed: {sec:.2f} s per 1000 CT-RATE reports (nlp.pipe + sentence_spans, one process, best of 3)")
        scores["seconds_per_1000"] = sec
    if args.errors:
        print("\n".join(errors(reports, predictions)))
    return scores


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
