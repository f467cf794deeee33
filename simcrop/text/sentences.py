"""Report sections → sentences with character offsets (spaCy `blank("en")` + sentencizer + report rules).

The sentencizer splits after `.`, `!`, `?`. On top of it, `report_boundaries` applies what chest CT reports
need: abbreviations that keep their period (`ABBREVIATIONS`), decimals (`3.5 cm`, one token already),
newlines as boundaries, numbered lists (`1. ... 2. ...`: each item one sentence, the number inside it),
units followed by a lower-case word (`5 mm. in diameter`) and `?`/`!` followed by one
(`(tumor invasion? secretion?)`) kept together.
Every sentence satisfies `text == section[start:end]`, with surrounding whitespace trimmed.
"""
from __future__ import annotations

import logging
import statistics
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from simcrop.config import SentencesConfig
from simcrop.data.manifest import lesions_of, read_manifest
from simcrop.data.quarantine import QUARANTINE_COLUMNS, QuarantineRecord
from simcrop.io import write_csv_atomic, write_jsonl_atomic

log = logging.getLogger(__name__)

NEVER = "never"                    # the period never ends the sentence ("approx. 3 cm", "Dr. Smith")
BEFORE_CAPITAL = "before_capital"  # ends it when the next word is capitalised ("etc. The heart", "no. 3")

# Abbreviations kept as one token with their period (lower-case keys; Capitalised and UPPER variants are
# added). Any other token that ends in "." after tokenization (spaCy's "a.", "Jan.") is BEFORE_CAPITAL.
ABBREVIATIONS = {
    "approx.": NEVER, "appr.": NEVER, "ca.": NEVER, "vs.": NEVER, "e.g.": NEVER, "i.e.": NEVER,
    "cf.": NEVER, "dr.": NEVER, "prof.": NEVER, "fig.": NEVER, "incl.": NEVER, "esp.": NEVER,
    "no.": BEFORE_CAPITAL, "nos.": BEFORE_CAPITAL, "etc.": BEFORE_CAPITAL, "resp.": BEFORE_CAPITAL,
    "max.": BEFORE_CAPITAL, "min.": BEFORE_CAPITAL, "lab.": BEFORE_CAPITAL,
}
# A unit, then ".", then a lower-case word is one sentence ("5 mm. in diameter"); before a capital it ends one.
UNITS = {"mm", "cm", "m", "ml", "cc", "hu", "mg", "kg", "sec", "s"}
SENTENCE_END = {".", "!", "?", ":", ";"}
SECTIONS = ("findings", "impressions", "clinical_information", "technique")
COMPONENT = "report_boundaries"


def _next_word(doc, i: int) -> tuple[int, int]:
    """Index of the first non-space token after i, and the number of newlines in between."""
    j, newlines = i + 1, 0
    while j < len(doc) and doc[j].is_space:
        newlines += doc[j].text.count("\n")
        j += 1
    return j, newlines


def _prev_word(doc, i: int) -> tuple[int, int]:
    j, newlines = i - 1, 0
    while j >= 0 and doc[j].is_space:
        newlines += doc[j].text.count("\n")
        j -= 1
    return j, newlines


def _is_list_marker_shape(doc, i: int) -> bool:
    """`1.` or `1)` followed by whitespace: a digit token glued to its punctuation."""
    tok = doc[i]
    if not (tok.text.isdigit() and len(tok.text) <= 2 and i + 2 < len(doc)):
        return False
    punct = doc[i + 1]
    return (punct.text in (".", ")") and not tok.whitespace_
            and (bool(punct.whitespace_) or doc[i + 2].is_space))


def _boundaries(doc) -> list:
    """Sentence starts (True/False; None where an earlier component, e.g. a parser, should decide)."""
    n = len(doc)
    start = [tok.is_sent_start for tok in doc]
    start[0] = True
    for i in range(1, n):            # whitespace never starts a sentence: move the start to the next word
        if doc[i].is_space:
            if start[i]:
                j, _ = _next_word(doc, i)
                if j < n:
                    start[j] = True
            start[i] = False
    for i, tok in enumerate(doc):
        if tok.is_space:
            continue
        j, newlines = _next_word(doc, i)
        if j >= n:
            continue
        following = doc[j].text
        if newlines >= 2 or (newlines == 1 and not following[:1].islower()):
            start[j] = True          # a line break is a boundary unless the next line continues in lower case
        elif newlines == 1:
            start[j] = tok.text in SENTENCE_END - {":", ";"}
        elif len(tok.text) > 1 and tok.text.endswith("."):
            policy = ABBREVIATIONS.get(tok.lower_, BEFORE_CAPITAL)
            start[j] = policy == BEFORE_CAPITAL and following[:1].isupper()
        elif tok.text == "." and i > 0 and doc[i - 1].lower_ in UNITS and following[:1].islower():
            start[j] = False
        elif tok.text in ("?", "!") and following[:1].islower():
            start[j] = False         # "(tumor invasion? secretion?)" stays one sentence
    last_marker = 0
    for i in range(n):
        if not _is_list_marker_shape(doc, i):
            continue
        number = int(doc[i].text)
        p, newlines = _prev_word(doc, i)
        j, _ = _next_word(doc, i + 1)
        after_boundary = p < 0 or newlines > 0 or doc[p].text in SENTENCE_END or doc[p].text.endswith(".")
        continues = last_marker > 0 and number == last_marker + 1 and j < n and doc[j].text[:1].isupper()
        if after_boundary or continues:
            start[i], start[i + 1] = True, False
            if j < n:
                start[j] = False     # "1. Findings": the number belongs to its item
            last_marker = number
    return start


def _report_boundaries(doc):
    if len(doc) == 0:
        return doc
    for tok, value in zip(doc, _boundaries(doc)):
        if value is not None and value != tok.is_sent_start:
            tok.is_sent_start = value
    return doc


def _add_abbreviations(nlp) -> None:
    from spacy.attrs import ORTH

    for abbreviation in ABBREVIATIONS:
        for variant in {abbreviation, abbreviation[0].upper() + abbreviation[1:], abbreviation.upper()}:
            nlp.tokenizer.add_special_case(variant, [{ORTH: variant}])


def build_splitter(cfg: SentencesConfig | None = None):
    """spaCy pipeline whose `doc.sents` are report sentences (blank("en") + sentencizer + report rules)."""
    import spacy
    from spacy.language import Language

    cfg = cfg or SentencesConfig()
    if not Language.has_factory(COMPONENT):
        Language.component(COMPONENT, func=_report_boundaries)
    if cfg.spacy_model == "blank":
        nlp = spacy.blank("en")
        nlp.add_pipe("sentencizer")
        nlp.add_pipe(COMPONENT)
    else:
        nlp = spacy.load(cfg.spacy_model)
        if "parser" in nlp.pipe_names:   # the parser respects boundaries already set
            nlp.add_pipe(COMPONENT, before="parser")
        else:
            if "senter" not in nlp.pipe_names:
                nlp.add_pipe("sentencizer")
            nlp.add_pipe(COMPONENT)
    _add_abbreviations(nlp)
    return nlp


def sentence_spans(doc) -> list[dict]:
    """`{"text", "start", "end"}` per sentence of a processed doc, whitespace trimmed, offsets into doc.text."""
    text, out = doc.text, []
    for sent in doc.sents:
        start, end = sent.start_char, sent.end_char
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if any(ch.isalnum() for ch in text[start:end]):
            out.append({"text": text[start:end], "start": start, "end": end})
    return out


def split_report(text: str, splitter) -> list[dict]:
    """Sentences of one report section: `[{"text", "start", "end"}]` with `text == report[start:end]`."""
    return sentence_spans(splitter(text)) if text and text.strip() else []


def _lesion_ids(lesions: list, start: int, end: int) -> list:
    ids = []
    for lesion in lesions:
        span = lesion.get("sentence_span")
        if span and span[0] < end and start < span[1]:
            ids.append(lesion.get("id"))
    return ids


def sentences_for_manifest(manifest_path, out_path, cfg: SentencesConfig, quarantine_out: Path,
                           progress: bool = True) -> dict:
    """One JSON line per volume with its sentences (offsets within each section); empty Findings quarantined."""
    unknown = [s for s in cfg.sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"sentences.sections: unknown section(s) {unknown}; allowed: {list(SECTIONS)}")
    rows = read_manifest(manifest_path).to_dict("records")
    nlp = build_splitter(cfg)
    # reconstructions repeat their scan's report: split each distinct text once
    texts = sorted({row[s] for row in rows for s in cfg.sections if row[s].strip()})
    docs = nlp.pipe(texts, batch_size=128)
    docs = tqdm(docs, total=len(texts), desc="sentences", unit="text", disable=not progress)
    split = {text: sentence_spans(doc) for doc, text in zip(docs, texts)}
    records, quarantined = [], []
    for row in rows:
        if "findings" in cfg.sections and not row["findings"].strip():
            quarantined.append(QuarantineRecord(row["volume_id"], row["image"], "sentences",
                                                "empty Findings section").as_row())
            continue
        lesions = lesions_of(row)
        sentences = [{"section": section, **span,
                      "lesion_ids": _lesion_ids(lesions, span["start"], span["end"]) if section == "findings" else []}
                     for section in cfg.sections for span in split.get(row[section], [])]
        if not sentences:
            quarantined.append(QuarantineRecord(row["volume_id"], row["image"], "sentences",
                                                f"no sentences in sections {list(cfg.sections)}").as_row())
            continue
        records.append({"volume_id": row["volume_id"], "scan_id": row["scan_id"], "split": row["split"],
                        "sentences": sentences})
    write_jsonl_atomic(out_path, records)
    write_csv_atomic(quarantine_out, pd.DataFrame(quarantined, columns=QUARANTINE_COLUMNS))
    per_volume = [len(r["sentences"]) for r in records]
    summary = dict(volumes=len(rows), written=len(records), quarantined=len(quarantined),
                   distinct_texts=len(texts), sentences=sum(per_volume),
                   median_sentences=statistics.median(per_volume) if per_volume else 0,
                   sentences_with_lesions=sum(bool(s["lesion_ids"]) for r in records for s in r["sentences"]))
    log.info("sentences: %s", summary)
    return summary
