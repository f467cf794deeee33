"""Report layout → content blocks: what lies between item separators, list markers, section headers and line breaks.

Rules (all on the original characters; a block is a character range of the report, never rewritten):
- separators: `•` (and `▪ ■ ► ●`) anywhere; `"`, `“`, `”` where they separate items, i.e. after a sentence end
  or before a capital, a digit or the end (CT-RATE joins its impression items with them: `lungs. " Hiatal
  hernia " Hepatic steatosis`); a quote around a lower-case word (`the "tree-in-bud" pattern`) stays;
  `-`, `*`, `–` bullets at the start of a line. Separators end the item before them and are left out.
- numbered items: `1.`, `2)`, `(3)`, `4、` at the start of an item, after `.?!;:` and whitespace, or
  continuing the count (`Mild emphysema 3) No effusion`); a number at the start of a line is an item only when
  the line before ended a sentence or the count goes on (so a wrapped `...segment\\n6 mm` is no list).
  The marker is left out of the block.
- section headers: `LUNGS:`, `HEART AND MEDIASTINUM:`, `Findings:`, `Lines/tubes:` at the start of an item
  (all capitals, or words of `HEADER_WORDS`), inline or on a line of their own, where a line holding only such
  words needs no colon (`IMPRESSION`). The header is left out and names the blocks after it (`header`,
  lower case) until the next one.
- lines: a blank line ends an item; a single line break continues the item (a hard wrap, joined by the
  sentence splitter) when the next line starts in lower case, with a digit or `(`, or the line before ends
  with `,;-/(&`, a sentence end or a function word (`the`, `of`, `with`, ...); otherwise (`Lungs are
  clear\\nHeart is normal.`) it ends one.
- a full-width stop `。！？` ends an item.
Sentence splitting inside a block is spaCy's (simcrop.text.sentences).
"""
from __future__ import annotations

import re
from typing import NamedTuple


class Block(NamedTuple):
    start: int            # character offsets into the report, whitespace trimmed
    end: int
    header: str | None    # the section header in force (lower case), None before any


HEADER_WORDS = frozenset("""
findings finding impression impressions conclusion conclusions technique comparison comparisons clinical history
indication indications information reason exam examination procedure protocol summary diagnosis diagnostic opinion
imaging result results recommendation recommendations addendum note notes other others additional
lungs lung airways airway pleura pleural spaces space heart pericardium cardiac mediastinum mediastinal hila hilar
hilum vessels vascular vasculature great aorta thoracic thorax chest wall soft tissue tissues bones bone osseous
musculoskeletal skeleton structures upper abdomen abdominal lymph nodes thyroid esophagus axilla axillae inlet
lines tubes devices support parenchyma breasts
""".split())
HEADER_JOINERS = frozenset({"and", "of", "the", "&", "/", "-"})
FUNCTION_WORDS = frozenset("""
a an the of in on at to with without and or nor but for from by as is are was were be been has have than into
onto within per via about approximately measuring measures including which that between along its their this these
""".split())
BULLETS = "•▪■►●"
QUOTES = "\"“”"
FULL_STOPS = "。！？"
_SENTENCE_END = ".?!;:。；！？"

_HEADER = re.compile(r"([^\W\d_][^\W\d_ /&,\-]*(?:[ /&,\-]+[^\W\d_]+){0,5})[ \t]*:(?![\d/])")
_HEADER_LINE = re.compile(r"([^\W\d_]+(?:[ /&,\-]+[^\W\d_]+){0,5})[ \t]*:?[ \t]*$")
_MARKER = re.compile(r"(?:\((\d{1,2})\)|(\d{1,2})[.)、])(?:[ \t]*(?=[^\W\d_]|[\"“(])|[ \t]+(?=\d))")
_BULLET = re.compile(r"[-*–][ \t]+(?=\S)")
_TRIGGER = re.compile(rf"[{BULLETS}{QUOTES}]|[{FULL_STOPS}]|[；：][ \t]*|[.?!;:][ \t]+|\s(?=(?:\(\d{{1,2}}\)|\d{{1,2}}[.)、])[ \t]+[A-Z])")
_QUOTATION = re.compile(r"[^\"“”.?!;\n]{1,40}[\"”](?=[ \t]*[a-z,;)])")   # a closing quote, then the sentence goes on
_WORD = re.compile(r"[\w.]+")
_LAST_WORD = re.compile(r"[\w.]+$")


def header_name(name: str, colon: bool) -> str | None:
    """`name` (the text before `:`) as a lower-case header, or None when it is no header."""
    words = [w for w in re.split(r"[ \t/&,\-]+", name) if w]
    if not words or len(words) > 6:
        return None
    lower = [w.lower() for w in words]
    lexical = all(w in HEADER_WORDS or w in HEADER_JOINERS for w in lower) and any(w in HEADER_WORDS for w in lower)
    capitals = colon and name.isupper() and sum(ch.isalpha() for ch in name) >= 3
    return " ".join(name.lower().split()) if lexical or capitals else None


def _quote_separates(text: str, i: int) -> bool:
    """Is the quote at i an item separator (CT-RATE) rather than a quotation mark (`the "tree-in-bud" sign`)?"""
    j = i - 1
    while j >= 0 and text[j].isspace():
        j -= 1
    k = i + 1
    while k < len(text) and text[k].isspace():
        k += 1
    if k == len(text) or text[k] in QUOTES + BULLETS:
        return True
    m = _QUOTATION.match(text, k)
    if m and k == i + 1:              # `"Tree-in-bud" nodules`: a quoted phrase inside a sentence
        return False
    if j < 0 or text[j] in _SENTENCE_END + QUOTES + BULLETS:
        return True
    return text[k].isupper() or text[k].isdigit()


def _continues(previous: str, line: str) -> bool:
    """Does `line` continue the item of `previous` (a hard wrap)? Both stripped and non-empty."""
    first = line[0]
    if first.islower() or first.isdigit() or first == "(":
        return True
    last = previous[-1]
    if last in ",;-/(&" or last in ".?!":
        return True
    words = _WORD.findall(previous[-20:])
    return bool(words) and words[-1].lower() in FUNCTION_WORDS


class _Scanner:
    """Walks one report and collects cuts: (start, end, header) ranges left out of every block."""

    def __init__(self, text: str, no_end: frozenset[str]):
        self.text, self.no_end = text, no_end
        self.cuts: list[tuple[int, int, str | None]] = []
        self.last_marker = 0

    def item_start(self, pos: int, end: int, marker_ok: bool = True) -> int:
        """At a position where an item may begin: take headers and list markers off; returns the content start."""
        text = self.text
        while pos < end:
            m = _HEADER.match(text, pos, end)
            name = header_name(m.group(1), colon=True) if m else None
            if name:
                stop = _skip_blanks(text, m.end(), end)
                self.cuts.append((pos, stop, name))
                pos, marker_ok = stop, self.marker_allowed(stop, end, "hard")
                continue
            m = _MARKER.match(text, pos, end)
            if m and marker_ok:
                self.last_marker = int(m.group(1) or m.group(2))
                self.cuts.append((pos, m.end(), None))
                pos = m.end()
                continue
            return pos
        return pos

    def marker_allowed(self, pos: int, end: int, context: str) -> bool:
        """A list number here? context: "hard" (after a sentence end or at an item start), "line" (a line
        start after an unfinished line: 1 or the next number), "inline" (the next number of a running list)."""
        m = _MARKER.match(self.text, pos, end)
        if not m:
            return False
        number = int(m.group(1) or m.group(2))
        if context == "hard":
            return True
        if context == "line":
            return number == 1 or number == self.last_marker + 1
        return self.last_marker > 0 and number == self.last_marker + 1

    def line(self, start: int, end: int, new_item: bool, context: str) -> None:
        text = self.text
        if new_item:
            self.cuts.append((start, start, None))
            m = _BULLET.match(text, start, end)
            if m:
                self.cuts.append((start, m.end(), None))
                start, context = m.end(), "hard"
            start = self.item_start(start, end, self.marker_allowed(start, end, context))
        pos = start
        while True:
            m = _TRIGGER.search(text, pos, end)
            if not m:
                return
            ch, pos = m.group()[0], m.end()
            if ch in BULLETS or (ch in QUOTES and _quote_separates(text, m.start())):
                self.cuts.append((m.start(), m.start() + 1, None))
                pos = self.item_start(_skip_blanks(text, pos, end), end)
            elif ch in FULL_STOPS:
                self.cuts.append((pos, pos, None))
                pos = self.item_start(_skip_blanks(text, pos, end), end)
            elif ch in _SENTENCE_END:
                if ch == "." and self.no_end:
                    word = _LAST_WORD.search(text, max(0, m.start() - 12), m.start() + 1)
                    if word and word.group().lower() in self.no_end:
                        continue     # "(Fig. 2) in", "approx. 3) ...": the period ends no sentence
                pos = self.item_start(pos, end, self.marker_allowed(pos, end, "hard"))
            elif ch.isspace() and self.marker_allowed(pos, end, "inline"):
                self.cuts.append((pos, pos, None))
                pos = self.item_start(pos, end)


def _skip_blanks(text: str, pos: int, end: int) -> int:
    while pos < end and text[pos] in " \t":
        pos += 1
    return pos


def layout(text: str, no_end: frozenset[str] = frozenset()) -> list[Block]:
    """Content blocks of one report section, in order; their text still holds hard-wrap line breaks.

    no_end: lower-case words with their period (`"approx."`) after which no item can begin."""
    scanner = _Scanner(text, no_end)
    previous = None                   # the previous line, stripped, when it held content
    offset = 0
    for raw in text.split("\n"):
        start, end = offset, offset + len(raw)
        offset = end + 1
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start == end:
            if previous is not None:
                scanner.cuts.append((start, start, None))
            previous = None
            continue
        line = text[start:end]
        m = _HEADER_LINE.match(line)
        name = header_name(m.group(1), colon=line.endswith(":")) if m else None
        if name and not line.endswith(":") and not line.isupper() and (not line[0].isupper() or (
                previous is not None and previous[-1] not in _SENTENCE_END)):
            name = None       # "...enlarged mediastinal\nlymph nodes\nmeasuring": a hard wrap, not a header
        if name:
            scanner.cuts.append((start, end, name))
            previous = None
            continue
        context = "hard" if previous is None or previous[-1] in _SENTENCE_END else "line"
        inline_header = _HEADER.match(line)
        starts_item = (previous is None or _BULLET.match(line) is not None
                       or scanner.marker_allowed(start, end, context)
                       or (inline_header is not None and header_name(inline_header.group(1), True) is not None)
                       or not _continues(previous, line))
        scanner.line(start, end, starts_item, context)
        previous = line
    return _blocks(text, scanner.cuts)


def _blocks(text: str, cuts: list[tuple[int, int, str | None]]) -> list[Block]:
    blocks, header, pos = [], None, 0
    for start, end, name in sorted(cuts, key=lambda c: (c[0], c[1])) + [(len(text), len(text), None)]:
        if start > pos:
            a, b = pos, start
            while a < b and text[a].isspace():
                a += 1
            while b > a and text[b - 1].isspace():
                b -= 1
            if a < b:
                blocks.append(Block(a, b, header))
        pos = max(pos, end)
        if name:
            header = name
    return blocks
