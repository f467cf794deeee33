"""Report text from planted findings: CT-RATE-style Findings, Impressions, clinical information, technique.

Templates (report_templates: positive findings; report_normals: normal statements, incidental findings,
clinical information, technique) use a tiny grammar: `<macro>` expands first, `{slot}` fills a slot,
`{a|b|c}` picks one alternative (innermost first, so they nest). Every positive sentence is tied to its
lesion so the grounding ground truth can point at it. A report has 12–34 sentences (median ~19), organised
by organ system like a real one, about a third of them negated, and never contradicts its own findings.
"""
from __future__ import annotations

import re

import numpy as np

from simcrop.data.labels import MISSING_SECTION

from .report_incidental import CLINICAL, INCIDENTAL, NORMAL_IMPRESSION, RECOMMEND, TECHNIQUE
from .report_normals import LABEL_KEYS, NORMALS, SECTION_ORDER
from .report_templates import COUNT_WORDS, CORONARY, DEVICES, IMPRESSION, KIND_WORDS, MACROS, POSITIVE

_CHOICE = re.compile(r"\{([^{}]*)\}")
_SLOT = re.compile(r"\{(\w+)\}")
_MACRO = re.compile("|".join(map(re.escape, MACROS)))
_ARTICLE = re.compile(r"\b(a|an|A|An) ([\w.-]+)")
NEGATION = re.compile(r"\b(no|not|without|neither|nor|absent)\b", re.I)

SECTION_OF = {
    "Lung nodule": "lung", "Lung opacity": "lung", "Consolidation": "lung", "Atelectasis": "lung",
    "Pulmonary fibrotic sequela": "lung", "Emphysema": "lung", "Mosaic attenuation pattern": "lung",
    "Peribronchial thickening": "lung", "Bronchiectasis": "lung", "Interlobular septal thickening": "lung",
    "Pleural effusion": "pleura", "Pericardial effusion": "heart", "Cardiomegaly": "heart",
    "Arterial wall calcification": "vessels", "Coronary artery wall calcification": "vessels",
    "Lymphadenopathy": "lymph", "Hiatal hernia": "esophagus", "Medical material": "soft",
}
LOBE_NAMES = {"right upper lobe", "right middle lobe", "right lower lobe", "left upper lobe", "left lower lobe"}
TWO_D = {"Lung nodule", "Lung opacity", "Consolidation", "Hiatal hernia"}     # sizes given as "12 x 9 mm"
DEFAULTS = {"Atelectasis": "linear", "Emphysema": "centrilobular", "Hiatal hernia": "sliding",
            "Bronchiectasis": "cylindrical", "Medical material": "catheter", "Lung nodule": "solid"}


def expand(template: str, rng: np.random.Generator, **slots) -> str:
    """Render one template: macros, then slots (their values may hold alternatives), then alternatives."""
    text = _MACRO.sub(lambda m: MACROS[m.group(0)], template)
    text = _SLOT.sub(lambda m: str(slots[m.group(1)]) if m.group(1) in slots else m.group(0), text)
    while True:
        text, n = _CHOICE.subn(lambda m: str(rng.choice(m.group(1).split("|"))), text)
        if n == 0:
            break
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([,.;:)?])", r"\1", text)
    text = re.sub(r"([?!])\.", r"\1", text)
    text = _ARTICLE.sub(lambda m: _article(m.group(1), m.group(2)), text)
    return text[0].upper() + text[1:]


def _article(art: str, word: str) -> str:
    w = word.lower()
    if w[0].isdigit():
        head = re.match(r"\d+", w).group(0)
        vowel = head.startswith("8") or head in ("11", "18")
    else:
        vowel = w[0] in "aeio" or (w[0] == "u" and not w.startswith(("uni", "use", "usu")))
    new = "an" if vowel else "a"
    return f"{new.capitalize() if art[0].isupper() else new} {word}"


def _size(mm: float, rng: np.random.Generator, two_d: bool = False) -> str:
    """'12 mm', '1.2 cm', '12.4 mm', '12 x 9 mm': the spread of styles real reports use (no qualifier)."""
    style = int(rng.integers(0, 6))
    if style == 0 and mm >= 10:
        return f"{mm / 10:.1f} cm"
    if style == 1 and two_d and mm >= 6:
        sep = " x " if rng.random() < 0.6 else "x"
        return f"{mm:.0f}{sep}{max(3, round(mm * rng.uniform(0.6, 0.9)))} mm"
    if style == 2 and mm >= 3:
        return f"{mm + rng.uniform(-0.4, 0.4):.1f} mm"
    return f"{max(1, round(mm))} mm"


def _lobe_phrase(lobe: str, segment: str | None, rng: np.random.Generator) -> str:
    side, part = lobe.split(" ", 1)              # "right", "upper lobe"
    plain = ["the {lobe}", "the {part} of the {side} lung", "the {side} lung {part}"][int(rng.integers(0, 3))]
    plain = plain.format(lobe=lobe, part=part, side=side)
    if not segment or rng.random() < 0.4:
        return plain
    if rng.random() < 0.5:
        return f"the {segment} segment of {plain}"
    return f"{plain} {segment} segment"


def where(rec: dict, rng: np.random.Generator) -> str:
    """The lesion's location as report text, with its determiner ("the …", "both …")."""
    loc, label = rec["location"], rec["label"]
    if label == "Coronary artery wall calcification":
        return CORONARY.get(loc, f"the {loc}")
    if label == "Lymphadenopathy":
        return "the aortopulmonary window" if loc == "aortopulmonary window" else f"the {loc} {{region|station|area}}"
    if loc in LOBE_NAMES:
        return _lobe_phrase(loc, rec["attrs"].get("segment"), rng)
    if loc.startswith("both"):
        return loc
    return f"the {loc}"


def _key(rec: dict) -> str:
    if rec["label"] != "Medical material":
        return rec["label"]
    kind = rec["attrs"].get("kind", "catheter")
    return "Medical material/" + ("sternotomy wires" if kind == "sternotomy wires" else "catheter")


def slots(rec: dict, rng: np.random.Generator) -> dict:
    at, label = rec["attrs"], rec["label"]
    kind = str(at.get("kind", "") or DEFAULTS.get(label, "solid"))
    count = int(at.get("count", 3))
    return {"where": where(rec, rng), "loc": rec["location"], "size": _size(rec["size_mm"], rng, label in TWO_D),
            "kind": KIND_WORDS.get(kind, kind), "pattern": str(at.get("pattern", "") or DEFAULTS.get(label, "mild")),
            "amount": at.get("amount", "small"), "ctr": at.get("ctr", "0.58"),
            "side": rec["location"] if rec["location"] in ("right", "left") else "right",
            "count": COUNT_WORDS.get(count, "{multiple|several|numerous}"),
            "device": DEVICES.get(kind, DEVICES["catheter"])}


def _end(text: str) -> str:
    return text if text[-1] in ".?!" else text + "."


def _pick_incidentals(rng: np.random.Generator) -> list[tuple]:
    n = int(rng.choice([0, 1, 1, 2, 2, 3]))
    out, tags = [], set()
    for i in rng.permutation(len(INCIDENTAL)):
        if len(out) == n:
            break
        tag = INCIDENTAL[i][1]
        if tag and tag in tags:
            continue
        out.append(INCIDENTAL[i])
        tags.add(tag)
    return out


def _pick_normals(rng, blocked: set, n_fill: int, n_fixed: int, n_neg_fixed: int) -> list[tuple[int, str, str]]:
    """(template index, section, text) of `n_fill` normal statements; ~a third of the report negated."""
    pool = []
    for i, (section, excl, tpl) in enumerate(NORMALS):
        keys = set(excl.split())
        if keys & blocked:
            continue
        text = expand(tpl, rng)
        pool.append((i, section, text, bool(NEGATION.search(text)), 4.0 if "*" in keys else 1.0))
    share = float(np.clip(rng.normal(0.34, 0.06), 0.2, 0.5))
    neg = [p for p in pool if p[3]]
    aff = [p for p in pool if not p[3]]
    want_neg = int(np.clip(round(share * (n_fill + n_fixed)) - n_neg_fixed, 0, min(n_fill, len(neg))))
    want_aff = min(n_fill - want_neg, len(aff))
    want_neg = min(len(neg), n_fill - want_aff)
    chosen = []
    for part, k in ((neg, want_neg), (aff, want_aff)):
        if k:
            w = np.array([p[4] for p in part])
            chosen += [part[j] for j in rng.choice(len(part), size=k, replace=False, p=w / w.sum())]
    return [(i, section, text) for i, section, text, _, _ in sorted(chosen)]


def write_report(records: list[dict], rng: np.random.Generator, slice_mm: float, clinical_given: bool = True) -> dict:
    """Findings/Impressions/Clinical/Technique text for one scan.

    Sets rec["sentence"] and rec["sentence_span"] (character offsets into Findings) on every record.
    """
    positives = {rec["label"] for rec in records}
    target = int(np.clip(np.round(rng.normal(19, 4.5)), 12, 34))
    incidentals = _pick_incidentals(rng)
    blocked = {k for k, v in LABEL_KEYS.items() if v in positives} | {inc[1] for inc in incidentals if inc[1]}
    fixed: list[tuple[str, str, dict | None]] = []           # (section, text, record) of findings
    for rec in records:
        tpl = str(rng.choice(POSITIVE[_key(rec)]))
        fixed.append((SECTION_OF[rec["label"]], expand(tpl, rng, **slots(rec, rng)), rec))
    for section, _, tpl, _ in incidentals:
        fixed.append((section, expand(tpl, rng), None))
    n_fill = max(0, target - len(fixed))
    n_neg_fixed = sum(bool(NEGATION.search(text)) for _, text, _ in fixed)
    normals = _pick_normals(rng, blocked, n_fill, len(fixed), n_neg_fixed)
    sentences: list[tuple[str, dict | None]] = []
    for section in SECTION_ORDER:
        items: list[tuple[str, dict | None]] = [(text, None) for _, s, text in normals if s == section]
        for s, text, rec in fixed:                            # findings sit among their section's statements
            if s == section:
                items.insert(int(rng.integers(0, len(items) + 1)), (text, rec))
        for text, rec in items:
            if rec is not None or text not in (t for t, _ in sentences):
                sentences.append((text, rec))
    findings, pos = [], 0
    for text, rec in sentences:
        if rec is not None:
            rec["sentence"], rec["sentence_span"] = text, [pos, pos + len(text)]
        findings.append(text)
        pos += len(text) + 1
    parts, seen = [], set()
    for rec in records:
        key = (rec["label"], rec["location"])
        if key not in seen:
            seen.add(key)
            parts.append(_end(expand(str(rng.choice(IMPRESSION[_key(rec)])), rng, **slots(rec, rng))))
    if not records:
        parts.append(expand(str(rng.choice(NORMAL_IMPRESSION)), rng))
    parts += [_end(expand(imp, rng)) for _, _, _, imp in incidentals if imp and rng.random() < 0.6]
    if rng.random() < 0.25:
        parts.append(expand(str(rng.choice(RECOMMEND)), rng))
    clinical = expand(str(rng.choice(CLINICAL)), rng) if clinical_given else MISSING_SECTION
    technique = MISSING_SECTION if rng.random() < 0.05 else \
        expand(str(rng.choice(TECHNIQUE)), rng, slice=f"{slice_mm:g}")
    return {"Findings_EN": " ".join(findings), "Impressions_EN": " ".join(parts),
            "ClinicalInformation_EN": clinical, "Technique_EN": technique}
