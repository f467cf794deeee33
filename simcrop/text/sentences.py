"""Report sections → sentences with character offsets (report layout rules + spaCy `blank("en")` + sentencizer).

Two layers. `simcrop.text.report_layout` cuts a section into blocks at what is layout, not prose: item
separators (CT-RATE's `"` and `•`, bullets), numbered items, section headers (`LUNGS:`, `Findings:`, a header
line) and line breaks that end an item; hard-wrapped lines stay in one block. Inside a block spaCy splits
after `.`, `!`, `?`, and `report_boundaries` corrects it for chest CT reports: abbreviations that keep their
period (`ABBREVIATIONS`), decimals (`3.5 cm`, one token already), units followed by a lower-case word
(`5 mm. in diameter`), no boundary inside parentheses (`(cyst?)`, `(small airway disease? small vessel
disease?)`) nor before a lower-case word after `?`/`!` or after punctuation that cannot end a sentence
(`?)`, `?,`, `.;`), and an opening `(` or quotation mark goes with the sentence it opens (`No effusion. (See
prior.)`), not at the end of the one before.

Each sentence is `{"text", "start", "end", "header"}`:
- `start`/`end`: character offsets into the ORIGINAL section text (what tokens are mapped by); separators,
  list markers and headers lie outside every `[start, end)`, surrounding whitespace is trimmed;
- `text == clean_text(section[start:end])`: the same characters with each hard wrap (whitespace holding a
  newline) turned into one space, so `text` never holds `\n`;
- `header`: the section header in force (lower case, e.g. "lungs"), None where there is none. It is not
  called `section`: sentence records keep `section` for the report section the offsets point into.
No sentence is empty or punctuation only.
"""
from __future__ import annotations

import bisect
import logging
import re
import statistics
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from simcrop.config import SentencesConfig
from simcrop.data.manifest import lesions_of, read_manifest
from simcrop.data.quarantine import QUARANTINE_COLUMNS, QuarantineRecord
from simcrop.io import write_csv_atomic, write_jsonl_atomic
from simcrop.text.report_layout import layout

log = logging.getLogger(__name__)

NEVER = "never"                    # the period never ends the sentence ("approx. 3 cm", "Dr. Smith")
BEFORE_CAPITAL = "before_capital"  # ends it when the next word is capitalised ("etc. The heart", "no. 3")

# Abbreviations kept as one token with their period (lower-case keys; Capitalised and UPPER variants are
# added). Any other token that ends in "." after tokenization (spaCy's "a.", "Jan.") is BEFORE_CAPITAL.
ABBREVIATIONS = {
    "approx.": NEVER, "appr.": NEVER, "vs.": NEVER, "e.g.": NEVER, "i.e.": NEVER,
    "cf.": NEVER, "dr.": NEVER, "prof.": NEVER, "fig.": NEVER, "incl.": NEVER, "esp.": NEVER,
    "no.": BEFORE_CAPITAL, "nos.": BEFORE_CAPITAL, "etc.": BEFORE_CAPITAL, "resp.": BEFORE_CAPITAL,
    "max.": BEFORE_CAPITAL, "min.": BEFORE_CAPITAL, "lab.": BEFORE_CAPITAL,
    "ca.": BEFORE_CAPITAL,        # circa before a number, but CT-RATE's "lung ca." (cancer) ends sentences
}
NEVER_ENDS = frozenset(a for a, policy in ABBREVIATIONS.items() if policy == NEVER)
# A unit, then ".", then a lower-case word is one sentence ("5 mm. in diameter"); before a capital it ends one.
UNITS = {"mm", "cm", "m", "ml", "cc", "hu", "mg", "kg", "sec", "s"}
OPENERS = {"(", "[", '"', "“"}
NO_END = {",", ";", ":", ")", "]"}     # a boundary after these needs more than a lower-case word next
SECTIONS = ("findings", "impressions", "clinical_information", "technique")
COMPONENT = "report_boundaries"
LAYOUT_KEY = "report_layout"           # doc.user_data keys: the section's layout blocks,
CUTS_KEY = "report_sentence_starts"    # and the character offsets where sentences start
_WRAP = re.compile(r"\s*\n\s*")


def clean_text(span: str) -> str:
    """A sentence's characters as its `text`: every hard wrap (whitespace holding a newline) becomes one space."""
    return _WRAP.sub(" ", span)


def _inside_parentheses(words: list[str], max_tokens: int = 80) -> list[bool]:
    """Per token: strictly inside a matched `( ... )` pair at most max_tokens long (an unclosed `(` is ignored)."""
    inside, stack = [False] * len(words), []
    for i, word in enumerate(words):
        if word == "(":
            stack.append(i)
        elif word == ")" and stack:
            j = stack.pop()
            if i - j <= max_tokens:
                inside[j + 1:i] = [True] * (i - j - 1)
    return inside


def _boundaries(tokens: list) -> list:
    """Sentence starts of a doc's tokens (True/False; None where an earlier component, e.g. a parser, decides).

    Works on plain lists: every `doc[i]` builds a new Token object, the main cost on 50k reports."""
    n = len(tokens)
    words = [tok.text for tok in tokens]
    space = [tok.is_space for tok in tokens]
    glued = [not tok.whitespace_ for tok in tokens]
    start = [tok.is_sent_start for tok in tokens]
    following = [n] * n                # index of the first non-space token after i
    for i in range(n - 2, -1, -1):
        following[i] = following[i + 1] if space[i + 1] else i + 1
    start[0] = True
    for i in range(1, n):            # whitespace never starts a sentence: move the start to the next word
        if space[i]:
            if start[i] and following[i] < n:
                start[following[i]] = True
            start[i] = False
    for i in range(1, n - 1):        # the sentencizer keeps `(`/`"` with the sentence before: "No effusion. (See"
        if start[i + 1] and words[i] in OPENERS and glued[i] and (not glued[i - 1] or space[i - 1]):
            start[i], start[i + 1] = True, False
    inside = _inside_parentheses(words)
    for i, word in enumerate(words):
        j = following[i]
        if space[i] or j >= n:
            continue
        first = words[j][:1]
        if len(word) > 1 and word.endswith("."):
            policy = ABBREVIATIONS.get(word.lower(), BEFORE_CAPITAL)
            start[j] = policy == BEFORE_CAPITAL and first.isupper()
        elif word == "." and i > 0 and words[i - 1].lower() in UNITS and first.islower():
            start[j] = False
        elif start[j] and first.islower() and (word in NO_END or word in ("?", "!")):
            start[j] = False         # "(tumor invasion? secretion?)", "cyst?) in the", "structures.; clinical"
        if start[j] and inside[j]:
            start[j] = False         # "(cyst? hemangioma?)", "(? Infection)": never inside parentheses
    return start


def _report_boundaries(doc):
    if len(doc) == 0:
        return doc
    blocks = layout(doc.text, NEVER_ENDS)
    doc.user_data[LAYOUT_KEY] = blocks
    tokens = list(doc)
    start = _boundaries(tokens)
    idx = [tok.idx for tok in tokens]
    for block in blocks:             # a block starts a sentence where a token starts there (not in `1.Viral`)
        i = bisect.bisect_left(idx, block.start)
        if i < len(idx) and idx[i] == block.start:
            start[i] = True
    for tok, value in zip(tokens, start):
        if value is not None and value != tok.is_sent_start:
            tok.is_sent_start = value
    if None not in start:            # all decided here (no parser after us): sentence_spans needs no doc.sents
        doc.user_data[CUTS_KEY] = [i for i, value in zip(idx, start) if value]
    return doc


def _add_abbreviations(nlp) -> None:
    from spacy.attrs import ORTH

    for abbreviation in ABBREVIATIONS:
        for variant in {abbreviation, abbreviation[0].upper() + abbreviation[1:], abbreviation.upper()}:
            nlp.tokenizer.add_special_case(variant, [{ORTH: variant}])


def build_splitter(cfg: SentencesConfig | None = None):
    """spaCy pipeline for `split_report`/`sentence_spans` (blank("en") + sentencizer + report rules)."""
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
    """`{"text", "start", "end", "header"}` per sentence of a processed doc (see the module docstring).

    The layout blocks are cut where spaCy starts a sentence; pieces without a letter or digit are dropped."""
    text = doc.text
    blocks = doc.user_data.get(LAYOUT_KEY)
    if blocks is None:
        blocks = layout(text, NEVER_ENDS)
    cuts = doc.user_data.get(CUTS_KEY)
    if cuts is None:
        cuts = [sent.start_char for sent in doc.sents]
    out = []
    for block in blocks:
        lo, hi = bisect.bisect_right(cuts, block.start), bisect.bisect_left(cuts, block.end)
        edges = [block.start, *cuts[lo:hi], block.end]
        for start, end in zip(edges, edges[1:]):
            while start < end and text[start].isspace():
                start += 1
            while end > start and text[end - 1].isspace():
                end -= 1
            if any(ch.isalnum() for ch in text[start:end]):
                out.append({"text": clean_text(text[start:end]), "start": start, "end": end, "header": block.header})
    return out


def split_report(text: str, splitter) -> list[dict]:
    """Sentences of one report section: `[{"text", "start", "end", "header"}]`, offsets into `text`."""
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
