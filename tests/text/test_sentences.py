import json
import re
import statistics

import pandas as pd
import pytest

from simcrop.config import SentencesConfig
from simcrop.data.manifest import empty_row, write_manifest
from simcrop.data.quarantine import QUARANTINE_COLUMNS
from simcrop.text.sentences import (ABBREVIATIONS, NEVER, build_splitter, clean_text, sentences_for_manifest,
                                    split_report)

SEPARATORS = "\"“”•"


@pytest.fixture(scope="module")
def splitter():
    return build_splitter(SentencesConfig())


def checked(report, splitter):
    """split_report with the contract checked: offsets into the original, `text` its cleaned characters."""
    sentences = split_report(report, splitter)
    previous_end = 0
    for s in sentences:
        assert set(s) == {"text", "start", "end", "header"}
        assert previous_end <= s["start"] < s["end"] <= len(report)
        assert s["text"] == clean_text(report[s["start"]:s["end"]]) == s["text"].strip()
        assert "\n" not in s["text"] and any(ch.isalnum() for ch in s["text"])
        if s["text"][0] in SEPARATORS or s["text"][-1] in SEPARATORS:   # only a quotation's own marks
            assert "•" not in s["text"] and s["text"].count('"') % 2 == 0, s["text"]
        previous_end = s["end"]
    return sentences


def texts(report, splitter):
    return [s["text"] for s in checked(report, splitter)]


@pytest.mark.parametrize("report, expected", [
    ("Nodule approx. 3.5 cm in the RUL vs. 2.1 cm previously. No effusion.",
     ["Nodule approx. 3.5 cm in the RUL vs. 2.1 cm previously.", "No effusion."]),
    ("1. Findings are normal. 2. Mild emphysema 3) No effusion",      # list markers are left out
     ["Findings are normal.", "Mild emphysema", "No effusion"]),
    ("Lungs are clear\nHeart is normal.\n\nNo effusion", ["Lungs are clear", "Heart is normal.", "No effusion"]),
    ("Opacities, e.g. ground glass, i.e. hazy, etc. are seen. Emphysema etc. The heart is normal.",
     ["Opacities, e.g. ground glass, i.e. hazy, etc. are seen.", "Emphysema etc.", "The heart is normal."]),
    ("Fracture of rib no. 3 on the left. Pericardial effusion: no. Cf. the prior exam by Dr. Smith.",
     ["Fracture of rib no. 3 on the left.", "Pericardial effusion: no.", "Cf. the prior exam by Dr. Smith."]),
    ("A nodule of 5 mm. in diameter. Another of 4 mm. Stable.",
     ["A nodule of 5 mm. in diameter.", "Another of 4 mm.", "Stable."]),
    ("Lesion in segment 2. Atelectasis (infection? secretion?). Heart normal",
     ["Lesion in segment 2.", "Atelectasis (infection? secretion?).", "Heart normal"]),
    ("  The trachea is open.   The aorta is 3.8 cm in diameter  \n", ["The trachea is open.", "The aorta is 3.8 cm in diameter"]),
    ("", []),
    ("   \n ", []),
    # CT-RATE item separators: left out, each item one sentence, an inline quotation kept
    ('No lytic lesion. " Hiatal hernia " Hepatic steatosis " Thoracic spondylosis',
     ["No lytic lesion.", "Hiatal hernia", "Hepatic steatosis", "Thoracic spondylosis"]),
    ('Heart normal. " Thyroid nodule in the right lobe." Hiatal hernia. "Emphysema.',
     ["Heart normal.", "Thyroid nodule in the right lobe.", "Hiatal hernia.", "Emphysema."]),
    ("Bones are natural. • Atherosclerosis. • Cardiomegaly • Old fracture.",
     ["Bones are natural.", "Atherosclerosis.", "Cardiomegaly", "Old fracture."]),
    ("Kyphosis. “Fusiform dilatation of the aorta.” Plaques in the LAD.",
     ["Kyphosis.", "Fusiform dilatation of the aorta.", "Plaques in the LAD."]),
    ('There is a "tree-in-bud" pattern in the right lower lobe. No effusion.',
     ['There is a "tree-in-bud" pattern in the right lower lobe.', "No effusion."]),
    ('No effusion. "Tree-in-bud" nodules are seen. Bullae ("vanishing lung").',
     ['No effusion.', '"Tree-in-bud" nodules are seen.', 'Bullae ("vanishing lung").']),
    ("Lungs are clear.\r\nHeart is normal in\r\nsize.", ["Lungs are clear.", "Heart is normal in size."]),
    ('"', []),
    ("• . ;", []),
    # question marks and punctuation inside parentheses
    ("A mass lesion (cyst?) in the lower outer quadrant. Heart normal.",
     ["A mass lesion (cyst?) in the lower outer quadrant.", "Heart normal."]),
    ("Mosaic pattern (small airway disease?, small vessel disease?). Heart normal.",
     ["Mosaic pattern (small airway disease?, small vessel disease?).", "Heart normal."]),
    ("Opacity in the left lower lobe (? Infection). Mosaic attenuation (Airways? Vascular?) in the upper lobes.",
     ["Opacity in the left lower lobe (? Infection).", "Mosaic attenuation (Airways? Vascular?) in the upper lobes."]),
    ("Narrowing in the right main bronchus.; clinical correlation is recommended. Next.",
     ["Narrowing in the right main bronchus.; clinical correlation is recommended.", "Next."]),
    ("Left adrenal adenoma?. Cyst (metastasis?) . Further evaluation is recommended.",
     ["Left adrenal adenoma?.", "Cyst (metastasis?) .", "Further evaluation is recommended."]),
    ("Nodule (see prior. No effusion. Heart normal.", ["Nodule (see prior.", "No effusion.", "Heart normal."]),
    ("No effusion. (See the prior report.) Heart normal.", ["No effusion.", "(See the prior report.)", "Heart normal."]),
    ("Lobectomy due to lung ca. There is pleural effusion. Nodule of ca. 3 cm.",
     ["Lobectomy due to lung ca.", "There is pleural effusion.", "Nodule of ca. 3 cm."]),
    ("Honeycombing (Fig. 2) in the bases. Clinic and lab. correlation is recommended.",
     ["Honeycombing (Fig. 2) in the bases.", "Clinic and lab. correlation is recommended."]),
    # hard-wrapped lines joined; a number after a wrap is no list item
    ("Healing fractures of the left posterior ribs\n7-9. The heart is normal. A catheter ends in the\nSVC.",
     ["Healing fractures of the left posterior ribs 7-9.", "The heart is normal.", "A catheter ends in the SVC."]),
    ("Nodule in segment\n6 measures 4 mm. Discussed at\n10:15 on 5/2/2022.",
     ["Nodule in segment 6 measures 4 mm.", "Discussed at 10:15 on 5/2/2022."]),
    ("Consolidation (aspiration?\npneumonia?) with air\nbronchograms.",
     ["Consolidation (aspiration? pneumonia?) with air bronchograms."]),
    # CTRG-style translations
    ("Ground-glass opacities in both lower lobes.The boundary is unclear.\n1.Viral pneumonia.\n2.Follow-up.",
     ["Ground-glass opacities in both lower lobes.", "The boundary is unclear.", "Viral pneumonia.", "Follow-up."]),
    ("Emphysema in both lungs。The trachea is patent。1. Emphysema；2. Small lymph nodes。",
     ["Emphysema in both lungs。", "The trachea is patent。", "Emphysema；", "Small lymph nodes。"]),
    ("(1)Central lung cancer. (2) Metastases; 3) Effusion", ["Central lung cancer.", "Metastases;", "Effusion"]),
])
def test_tricky_text(splitter, report, expected):
    assert texts(report, splitter) == expected


@pytest.mark.parametrize("report, expected", [
    ("LUNGS: Clear. No nodule. PLEURA: No effusion.\nHEART AND MEDIASTINUM: Normal.",
     [("lungs", "Clear."), ("lungs", "No nodule."), ("pleura", "No effusion."), ("heart and mediastinum", "Normal.")]),
    ("FINDINGS:\nThe lungs are clear without\nconsolidation.\n\nIMPRESSION\n1. Normal CT.\n2. No change.",
     [("findings", "The lungs are clear without consolidation."), ("impression", "Normal CT."),
      ("impression", "No change.")]),
    ("Findings:\n1. Lungs clear\n2. Heart normal.", [("findings", "Lungs clear"), ("findings", "Heart normal.")]),
    ("FINDINGS: Lungs: Patchy opacity (? infection). Lines/tubes: None. Heart: normal size.",
     [("lungs", "Patchy opacity (? infection)."), ("lines/tubes", "None."), ("heart", "normal size.")]),
    ("Impression:\n- New nodule, suspicious for\nmalignancy. Recommend PET/CT.\n- Emphysema.",
     [("impression", "New nodule, suspicious for malignancy."), ("impression", "Recommend PET/CT."),
      ("impression", "Emphysema.")]),
    ("Comparison: CT dated 25.12.2019. Trachea open.",
     [("comparison", "CT dated 25.12.2019."), ("comparison", "Trachea open.")]),
    # no headers: a colon after words that name no section, a lead-in
    ("Pericardial effusion: no. As far as can be observed: Heart contour and size are normal.",
     [(None, "Pericardial effusion: no."), (None, "As far as can be observed: Heart contour and size are normal.")]),
])
def test_headers_become_the_sentence_header(splitter, report, expected):
    assert [(s["header"], s["text"]) for s in checked(report, splitter)] == expected


def test_offsets_point_into_the_report(splitter):
    report = "\n Nodule approx. 3.5 cm.  \n2. Next item here"
    sentences = split_report(report, splitter)
    assert [(s["start"], s["end"]) for s in sentences] == [(2, 24), (30, 44)]
    report = "LUNGS: A nodule in the right\nupper lobe. • No effusion."
    sentences = checked(report, splitter)
    assert [(s["start"], s["end"]) for s in sentences] == [(7, 40), (43, 55)]
    assert sentences[0]["text"] == "A nodule in the right upper lobe."


def test_real_ctrate_reports(splitter, shared_data):
    rows = [json.loads(line) for line in (shared_data / "reports" / "ctrate_sample_reports.jsonl").open()]
    assert len(rows) == 40
    never = [a for a, policy in ABBREVIATIONS.items() if policy == NEVER]
    counts = []
    for row in rows:
        sentences = texts(row["text"], splitter)
        counts.append(len(sentences))
        for sentence in sentences:
            assert not any(sentence.lower().endswith(" " + a) for a in never), sentence
            assert not re.match(r"\d+(\.\d+)?\s*cm\b", sentence), sentence
            assert len(sentence) > 3, sentence
            assert not sentence.endswith("("), sentence
            assert not re.search(r"[\"“”•]", sentence), sentence   # CT-RATE quotes are always separators
    assert 8 <= statistics.median(counts) <= 40
    assert min(counts) >= 3 and max(counts) <= 80


def manifest_rows():
    findings = "A 6 mm nodule in the right upper lobe. No pleural effusion. Consolidation in the left lower lobe."
    lesions = [{"id": "L1", "label": "Lung nodule", "sentence_span": [0, 38]},
               {"id": "L2", "label": "Consolidation", "sentence_span": [60, len(findings)]}]
    rows = []
    for name, split, text, impressions in (("train_1_a_1", "train", findings, "Nodule. Consolidation."),
                                           ("train_1_a_2", "train", findings, "Nodule. Consolidation."),
                                           ("valid_1_a_1", "test", "Normal lungs.", "Not given."),
                                           ("valid_2_a_1", "test", "  ", "Normal.")):
        row = empty_row()
        row.update(volume_id=name, patient_id=name.rsplit("_", 2)[0], scan_id=name.rsplit("_", 1)[0], split=split,
                   image=f"/data/{name}.nii.gz", format="nifti", source="synthetic", findings=text,
                   impressions="" if impressions == "Not given." else impressions,
                   lesions=json.dumps(lesions) if name.startswith("train") else "")
        rows.append(row)
    return rows, findings


def test_sentences_for_manifest(tmp_path):
    rows, findings = manifest_rows()
    write_manifest(tmp_path / "manifest.csv", rows)
    out, quarantine = tmp_path / "sentences.jsonl", tmp_path / "q.csv"
    summary = sentences_for_manifest(tmp_path / "manifest.csv", out, SentencesConfig(), quarantine, progress=False)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["volume_id"] for r in records] == ["train_1_a_1", "train_1_a_2", "valid_1_a_1"]
    first = records[0]
    assert (first["scan_id"], first["split"]) == ("train_1_a", "train")
    assert [(s["section"], s["lesion_ids"]) for s in first["sentences"]] == [
        ("findings", ["L1"]), ("findings", []), ("findings", ["L2"]), ("impressions", []), ("impressions", [])]
    for s in first["sentences"]:
        source = findings if s["section"] == "findings" else "Nodule. Consolidation."
        assert source[s["start"]:s["end"]] == s["text"]
    assert records[1]["sentences"] == first["sentences"]
    assert [s["section"] for s in records[2]["sentences"]] == ["findings"]
    bad = pd.read_csv(quarantine)
    assert list(bad.columns) == QUARANTINE_COLUMNS
    assert bad.to_dict("records") == [{"volume_id": "valid_2_a_1", "path": "/data/valid_2_a_1.nii.gz",
                                       "stage": "sentences", "reason": "empty Findings section"}]
    assert summary["written"] == 3 and summary["quarantined"] == 1 and summary["sentences"] == 11
    assert summary["distinct_texts"] == 4 and summary["sentences_with_lesions"] == 4


def test_sections_configurable_and_checked(tmp_path):
    rows, _ = manifest_rows()
    write_manifest(tmp_path / "manifest.csv", rows)
    out = tmp_path / "s.jsonl"
    sentences_for_manifest(tmp_path / "manifest.csv", out, SentencesConfig(sections=["findings"]),
                           tmp_path / "q.csv", progress=False)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {s["section"] for r in records for s in r["sentences"]} == {"findings"}
    with pytest.raises(ValueError, match="unknown section.*'conclusion'"):
        sentences_for_manifest(tmp_path / "manifest.csv", out, SentencesConfig(sections=["conclusion"]),
                               tmp_path / "q.csv", progress=False)


def test_lesions_and_headers_follow_the_original_offsets(tmp_path):
    """Headers, separators and hard wraps change `text`, not the offsets the lesion spans are given in."""
    findings = "LUNGS: A 6 mm nodule in the right\nupper lobe. No effusion. • Consolidation in the left lower lobe."
    first, last = findings.index("A 6 mm"), findings.index("Consolidation")
    lesions = [{"id": "L1", "label": "Lung nodule", "sentence_span": [first, findings.index(" No effusion")]},
               {"id": "L2", "label": "Consolidation", "sentence_span": [last, len(findings)]}]
    row = empty_row()
    row.update(volume_id="train_1_a_1", patient_id="train_1", scan_id="train_1_a", split="train",
               image="/data/train_1_a_1.nii.gz", format="nifti", source="synthetic", findings=findings,
               impressions="", lesions=json.dumps(lesions))
    write_manifest(tmp_path / "manifest.csv", [row])
    out = tmp_path / "sentences.jsonl"
    sentences_for_manifest(tmp_path / "manifest.csv", out, SentencesConfig(sections=["findings"]),
                           tmp_path / "q.csv", progress=False)
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(s["header"], s["text"], s["lesion_ids"]) for s in record["sentences"]] == [
        ("lungs", "A 6 mm nodule in the right upper lobe.", ["L1"]),
        ("lungs", "No effusion.", []),
        ("lungs", "Consolidation in the left lower lobe.", ["L2"])]
    for s in record["sentences"]:
        assert s["section"] == "findings" and clean_text(findings[s["start"]:s["end"]]) == s["text"]


@pytest.mark.parametrize("text,kept", [
    ("There are several enlarged mediastinal\nlymph nodes\nmeasuring up to 12 mm.", "lymph nodes"),
    ("Calcification of the\naorta\nand coronary arteries.", "aorta"),
])
def test_wrapped_line_of_header_words_is_not_a_header(splitter, text, kept):
    """A hard-wrapped line that happens to read like a header ("lymph nodes") stays in its sentence."""
    records = checked(text, splitter)
    assert len(records) == 1 and kept in records[0]["text"] and records[0]["header"] is None
