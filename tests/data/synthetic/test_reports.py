"""Report statistics against the real CT-RATE targets (docs/data.md), grammar of every template, sentence ↔ lesion link."""
from __future__ import annotations

import re
import zlib

import numpy as np
import pytest

from simcrop.data.labels import CTRATE_LABELS, MISSING_SECTION
from simcrop.data.synthetic.findings import PLANTERS, plant
from simcrop.data.synthetic.phantom import build_phantom, draw_anatomy
from simcrop.data.synthetic.presets import PRESETS, draw_grid
from simcrop.data.synthetic.report_incidental import CLINICAL, INCIDENTAL, NORMAL_IMPRESSION, RECOMMEND, TECHNIQUE
from simcrop.data.synthetic.report_normals import LABEL_KEYS, NORMALS, SECTION_ORDER
from simcrop.data.synthetic.report_templates import IMPRESSION, POSITIVE
from simcrop.data.synthetic.reports import NEGATION, SECTION_OF, _key, expand, slots, write_report
from simcrop.data.synthetic.shapes import Frame

LOBES = ["right upper lobe", "right middle lobe", "right lower lobe", "left upper lobe", "left lower lobe"]
SEGMENTS = ["apical", "anterior", "posterior", "lateral", "medial", "apicoposterior", "superior lingular",
            "inferior lingular", "superior", "anterior basal", "anteromedial basal", "posterior basal",
            "lateral basal", "medial basal"]
# Every (location, attrs) a planter can produce, per label (kept in sync with the planters by a test below).
LOCATIONS = {
    "Lung nodule": (LOBES, {"kind": ["solid", "part-solid", "calcified"], "segment": SEGMENTS}),
    "Lung opacity": (LOBES, {"pattern": ["ground-glass"], "segment": SEGMENTS}),
    "Consolidation": (LOBES, {"segment": SEGMENTS}),
    "Atelectasis": (LOBES, {"pattern": ["linear", "subsegmental", "plate-like"], "segment": SEGMENTS}),
    "Pulmonary fibrotic sequela": (LOBES, {"pattern": ["linear"], "segment": SEGMENTS}),
    "Pleural effusion": (["right", "left"], {"amount": ["minimal", "small", "moderate", "large"]}),
    "Pericardial effusion": (["pericardium"], {"amount": ["minimal", "small", "moderate", "large"]}),
    "Cardiomegaly": (["heart"], {"ctr": [0.55, 0.62]}),
    "Emphysema": (["both upper lobes", "both lungs"], {"pattern": ["centrilobular", "paraseptal", "centriacinar"]}),
    "Arterial wall calcification": (["aortic arch", "thoracic aorta"], {"count": [3, 5, 9]}),
    "Coronary artery wall calcification": (["LAD", "LAD and circumflex", "left main and LAD"], {"count": [2, 4, 6]}),
    "Lymphadenopathy": (["subcarinal", "right paratracheal", "prevascular", "right hilar", "left hilar",
                         "aortopulmonary window"], {}),
    "Hiatal hernia": (["esophageal hiatus"], {"kind": ["sliding", "small sliding", "paraesophageal"]}),
    "Medical material": (["sternum", "superior vena cava / right atrium"],
                         {"kind": ["catheter", "sternotomy wires", "port catheter"]}),
    "Bronchiectasis": (LOBES + ["both lower lobes"], {"kind": ["cylindrical", "varicose", "traction"]}),
    "Peribronchial thickening": (LOBES + ["both lower lobes", "both lungs"], {}),
    "Interlobular septal thickening": (LOBES + ["both lower lobes", "both lungs", "right lung", "left lung"], {}),
    "Mosaic attenuation pattern": (["both lungs", "both lower lobes", "right lung", "left lung"], {}),
}
BAD = [
    (r"\b(about|approximately|approx\.|roughly|nearly)\s+(about|approximately|approx\.|roughly|nearly)\b", "doubled qualifier"),
    (r"  ", "double space"), (r" ,| \.|,,|\.\.|,\.|\.,", "stray punctuation"), (r"[{}<>|]", "unexpanded markup"),
    (r"\b(\w+) \1\b", "doubled word"), (r"\ba [aeio]|\ban [b-df-hj-np-tv-z]", "article"),
    (r"\b(opacity|nodule|effusion|consolidation|increase|lesion|node|thickening|hernia|attenuation|pattern|"
     r"calcification|atelectasis|emphysema|bronchiectasis|heart|aorta|trachea|cyst) (are|were)\b", "singular + are"),
    (r"\b(opacities|nodules|densities|changes|areas|nodes|plaques|bands|calcifications|bronchi|septa|"
     r"thickenings|strands|wires|sutures|cysts) (is|was)\b", "plural + is"),
    (r"\bThere (is|are|was|were) no\b[^,.]*\b(is|are|was|were) (seen|present|identified|detected|observed|noted)\b",
     "two finite verbs"),
    (r"\b(is|are|was|were) (is|are|was|were)\b", "two verbs"),
]


def check_sentence(text: str) -> None:
    assert text and (text[0].isupper() or text[0].isdigit()), text
    assert text[-1] in ".?", f"no final period: {text!r}"
    for pattern, what in BAD:
        assert not re.search(pattern, text), f"{what}: {text!r}"


def fake_records(rng: np.random.Generator, labels) -> list[dict]:
    out = []
    for i, label in enumerate(labels):
        locs, attrs = LOCATIONS[label]
        at = {k: v[int(rng.integers(len(v)))] for k, v in attrs.items()}
        out.append({"id": i + 1, "label": str(label), "location": str(rng.choice(locs)), "attrs": at,
                    "size_mm": float(np.round(rng.uniform(1.5, 70), 1)), "center": [0.0, 0.0, 0.0]})
    return out


def _records(rng):
    return fake_records(rng, rng.choice(list(PLANTERS), size=int(rng.integers(0, 5)), replace=False))


def test_every_label_has_templates_section_and_planter():
    assert set(PLANTERS) == set(CTRATE_LABELS) == set(SECTION_OF) == set(LOCATIONS) == set(LABEL_KEYS.values())
    keys = {_key({"label": lab, "attrs": {"kind": k}}) for lab in CTRATE_LABELS for k in ("catheter", "sternotomy wires")}
    assert keys <= set(POSITIVE) and keys <= set(IMPRESSION)
    assert all(len(POSITIVE[k]) >= 4 for k in keys)
    assert {s for s, _, _ in NORMALS} <= set(SECTION_ORDER) and {s for s, *_ in INCIDENTAL} <= set(SECTION_ORDER)
    tags = {t for _, t, _, _ in INCIDENTAL if t}
    assert tags <= {k for _, excl, _ in NORMALS for k in excl.split()}   # each tag silences some normal


@pytest.mark.parametrize("label", CTRATE_LABELS)
def test_every_positive_template_is_grammatical_with_every_slot(label):
    rng = np.random.default_rng(zlib.crc32(label.encode()))
    locs, attrs = LOCATIONS[label]
    for loc in locs:
        for name, values in [("", [None])] + list(attrs.items()):
            for value in values:
                at = {k: v[0] for k, v in attrs.items()} | ({name: value} if name else {})
                for size in (1.8, 4.0, 8.6, 11.0, 18.0, 66.0):
                    rec = {"label": label, "location": loc, "attrs": at, "size_mm": size}
                    for tpl in POSITIVE[_key(rec)]:
                        for _ in range(4):
                            text = expand(tpl, rng, **slots(rec, rng))
                            check_sentence(text)
                            assert not NEGATION.search(text) or "not" in text, text
                    for tpl in IMPRESSION[_key(rec)]:
                        check_sentence(expand(tpl, rng, **slots(rec, rng)) + ".")


def test_every_normal_incidental_and_header_template_is_grammatical():
    rng = np.random.default_rng(0)
    templates = [t for _, _, t in NORMALS] + [t for _, _, t, _ in INCIDENTAL] + CLINICAL + NORMAL_IMPRESSION + RECOMMEND
    templates += [imp + "." for _, _, _, imp in INCIDENTAL if imp and not imp.endswith("?")]
    for tpl in templates:
        for _ in range(60):
            check_sentence(expand(tpl, rng))
    for tpl in TECHNIQUE:
        for _ in range(20):
            check_sentence(expand(tpl, rng, slice="1.5"))


def test_whole_reports_are_grammatical_and_consistent():
    for i in range(150):
        rng = np.random.default_rng(i)
        records = _records(rng)
        report = write_report(records, rng, 1.5)
        for field in ("Findings_EN", "Impressions_EN", "ClinicalInformation_EN", "Technique_EN"):
            assert "  " not in report[field] and not re.search(r"[{}<>|]", report[field])
        findings = report["Findings_EN"]
        for rec in records:
            check_sentence(rec["sentence"])
        labels = {r["label"] for r in records}
        if "Pleural effusion" in labels:
            assert "no pleural effusion" not in findings.lower()
        if "Lung nodule" in labels:
            assert "no suspicious pulmonary nodule" not in findings.lower()


def test_sentence_counts_negations_and_vocabulary():
    counts, negated, words, vocab = [], [], [], set()
    for i in range(200):
        rng = np.random.default_rng(i)
        text = write_report(_records(rng), rng, 1.5)["Findings_EN"]
        sentences = [s for s in re.split(r"(?<=[.?])\s+(?=[A-Z])", text) if s]
        counts.append(len(sentences))
        negated += [bool(NEGATION.search(s)) for s in sentences]
        words += [len(s.split()) for s in sentences]
        vocab |= set(re.findall(r"[a-z]+", text.lower()))
    assert 12 <= min(counts) and max(counts) <= 36
    assert 17 <= np.median(counts) <= 22
    assert 0.27 <= np.mean(negated) <= 0.40
    assert 10 <= np.mean(words) <= 13
    assert len(vocab) >= 700                       # was ~350 before the template rewrite


def test_spans_point_at_each_lesion_sentence():
    rng = np.random.default_rng(1)
    records = fake_records(np.random.default_rng(5), CTRATE_LABELS)
    report = write_report(records, rng, 5.0, clinical_given=False)
    assert report["ClinicalInformation_EN"] == MISSING_SECTION
    for rec in records:
        start, end = rec["sentence_span"]
        assert report["Findings_EN"][start:end] == rec["sentence"]
    assert report["Impressions_EN"] and report["Impressions_EN"] != MISSING_SECTION


def test_planted_locations_are_the_ones_the_templates_are_checked_with():
    rng = np.random.default_rng([11, 1])
    grid, place = draw_grid(PRESETS["small"], rng)
    anatomy = draw_anatomy(rng, place["z_apex"] - grid.origin[2])
    frame = Frame(grid, **place)
    _, records = plant(build_phantom(anatomy, frame, rng), frame, list(PLANTERS), rng)
    for rec in records:
        locs, attrs = LOCATIONS[rec["label"]]
        assert rec["location"] in locs, rec
        for name in ("kind", "pattern", "segment"):
            if name in rec["attrs"]:
                assert rec["attrs"][name] in attrs.get(name, []), (rec["label"], name, rec["attrs"][name])
    report = write_report(records, rng, grid.spacing[2])
    for rec in records:
        assert report["Findings_EN"][slice(*rec["sentence_span"])] == rec["sentence"]


def test_expand_nests_fills_slots_and_fixes_articles():
    rng = np.random.default_rng(0)
    out = expand("{a {b|c}|a {b|c}} nodule in the {loc}.", rng, loc="right upper lobe")
    assert out in {"A b nodule in the right upper lobe.", "A c nodule in the right upper lobe."}
    assert expand("A {size} nodule, a enlarged node and an small cyst.", rng, size="8 mm") == \
        "An 8 mm nodule, an enlarged node and a small cyst."
    assert expand("There is {|} effusion .", rng) == "There is effusion."
