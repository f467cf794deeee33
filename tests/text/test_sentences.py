import json
import re
import statistics

import pandas as pd
import pytest

from simcrop.config import SentencesConfig
from simcrop.data.manifest import empty_row, write_manifest
from simcrop.data.quarantine import QUARANTINE_COLUMNS
from simcrop.text.sentences import ABBREVIATIONS, NEVER, build_splitter, sentences_for_manifest, split_report


@pytest.fixture(scope="module")
def splitter():
    return build_splitter(SentencesConfig())


def texts(report, splitter):
    sentences = split_report(report, splitter)
    for s in sentences:
        assert report[s["start"]:s["end"]] == s["text"] == s["text"].strip()
    return [s["text"] for s in sentences]


@pytest.mark.parametrize("report, expected", [
    ("Nodule approx. 3.5 cm in the RUL vs. 2.1 cm previously. No effusion.",
     ["Nodule approx. 3.5 cm in the RUL vs. 2.1 cm previously.", "No effusion."]),
    ("1. Findings are normal. 2. Mild emphysema 3) No effusion",
     ["1. Findings are normal.", "2. Mild emphysema", "3) No effusion"]),
    ("Findings:\n1. Lungs clear\n2. Heart normal.",
     ["Findings:", "1. Lungs clear", "2. Heart normal."]),
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
])
def test_tricky_text(splitter, report, expected):
    assert texts(report, splitter) == expected


def test_offsets_point_into_the_report(splitter):
    report = "\n Nodule approx. 3.5 cm.  \n2. Next item here"
    sentences = split_report(report, splitter)
    assert [(s["start"], s["end"]) for s in sentences] == [(2, 24), (27, 44)]


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
