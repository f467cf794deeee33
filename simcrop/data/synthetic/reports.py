"""Report text from planted findings: CT-RATE-style Findings, Impressions, clinical information, technique.

Templates use a tiny grammar: `{a|b|c}` picks one alternative (innermost first, so they nest).
Every positive sentence is tied to its lesion ids so the grounding ground truth can point at it.
"""
from __future__ import annotations

import re

import numpy as np

from simcrop.data.labels import MISSING_SECTION

_CHOICE = re.compile(r"\{([^{}]*)\}")
NEGATION = re.compile(r"\b(no|not|without|neither|nor|absent)\b", re.I)


def expand(template: str, rng: np.random.Generator, **slots) -> str:
    # slots first ({loc}: a bare word naming a slot), then the alternatives
    text = re.sub(r"\{(\w+)\}", lambda m: str(slots[m.group(1)]) if m.group(1) in slots else m.group(0), template)
    while True:
        text, n = _CHOICE.subn(lambda m: str(rng.choice(m.group(1).split("|"))), text)
        if n == 0:
            break
    text = re.sub(r"\s+", " ", text).strip()
    return text[0].upper() + text[1:]


def _size(mm: float, rng: np.random.Generator) -> str:
    """'12 mm', '1.2 cm', 'approx. 12 mm', '12x9 mm' — the spread of styles real reports use."""
    style = rng.integers(0, 5)
    if style == 0 and mm >= 10:
        return f"{mm / 10:.1f} cm"
    if style == 1:
        return f"approx. {mm:.0f} mm"
    if style == 2 and mm >= 6:
        return f"{mm:.0f}x{max(3, round(mm * rng.uniform(0.6, 0.9))):.0f} mm"
    if style == 3:
        return f"approximately {mm:.0f} mm"
    return f"{mm:.0f} mm"


# Positive templates per label. Slots: {loc} location, {size} formatted size, {amount}, {kind}, {pattern}.
POSITIVE = {
    "Lung nodule": [
        "A {size} {kind} nodule {is|was} {observed|seen|detected|noted} in the {loc}.",
        "{There is a|A} {kind} nodule {measuring|of} {size} in the {loc}.",
        "In the {loc}, a {size} {kind} {nodule|nodular lesion} with {smooth|lobulated|well-defined|slightly irregular} contours is {seen|observed}.",
        "{Nodule|Pulmonary nodule} {in the {loc}|located in the {loc}}, {measuring|approximately measuring} {size}.",
    ],
    "Lung opacity": [
        "{Ground-glass|Ground glass} {opacity|density increase|areas} {is|are} {observed|seen|noted} in the {loc}, {measuring|extending over} {size}.",
        "In the {loc}, a {patchy|focal|peripheral subpleural} ground-glass {opacity|density} of {size} {is noted|was observed}.",
        "{Focal|Patchy} ground-glass {densities|opacities} {were|are} {detected|observed} in the {loc}, {compatible with|suggestive of} {infection|inflammation|an infectious process}.",
    ],
    "Consolidation": [
        "{A consolidation area|An area of consolidation|Consolidation} {measuring|of} {size} {is|was} {observed|seen} in the {loc}, {with air bronchograms|with surrounding ground glass|compatible with pneumonia}.",
        "In the {loc}, there is {a consolidated area|consolidation} {of about|measuring} {size}.",
        "{Pneumonic|Dense} consolidation {is noted|was detected} in the {loc}, {approx.|approximately} {size} in {size|diameter|largest dimension}.",
    ],
    "Atelectasis": [
        "{Linear|Subsegmental|Plate-like|Band-like} atelectasis {is|was} {observed|seen|noted} in the {loc}.",
        "{Atelectatic|Subsegmental atelectatic} changes {are|were} {observed|present} in the {loc}, {measuring|extending} {size}.",
        "In the {loc}, {passive|compressive|linear} atelectasis {is seen|was detected}.",
    ],
    "Pulmonary fibrotic sequela": [
        "{Linear|Band-like|Fibrotic} {densities|sequelae changes|fibrotic bands} {are|were} {observed|seen} in the {loc}.",
        "{Sequelae|Fibrotic sequela} {changes|densities} {were detected|are noted} in the {loc}, {likely post-inflammatory|in favor of old sequelae}.",
        "In the {loc}, {linear|parenchymal} fibrotic {bands|strands} {are present|are observed}.",
    ],
    "Pleural effusion": [
        "{A|An} {amount} pleural effusion {is|was} {observed|seen|detected} {on the {loc}|in the {loc} hemithorax}.",
        "{Pleural effusion|Pleural fluid} {reaching|measuring} {size} in {depth|thickness} {is|was} {noted|observed} in the {loc} hemithorax.",
        "In the {loc} hemithorax, {amount} pleural effusion {with passive atelectasis|is seen|was detected}.",
    ],
    "Pericardial effusion": [
        "{A|An} {amount} pericardial effusion {reaching|measuring} {size} in thickness {is|was} {observed|noted}.",
        "Pericardial {effusion|fluid} {of|measuring} {size} {is observed|was detected}, {amount} in amount.",
    ],
    "Cardiomegaly": [
        "{The heart is enlarged|Heart size is increased|Cardiomegaly is present}, {with a cardiothoracic ratio of|cardiothoracic ratio} {ctr}.",
        "{Heart dimensions|Heart contour and size} {are increased|are enlarged} {(cardiomegaly)|in favor of cardiomegaly}.",
        "{Cardiomegaly|Enlarged heart} {is observed|was noted}, {transverse cardiac diameter approx.|with a transverse diameter of} {size}.",
    ],
    "Emphysema": [
        "{Centrilobular|Paraseptal|Centriacinar} emphysematous changes {are|were} {observed|seen|noted} in {loc}.",
        "{Emphysema|Emphysematous areas} {is|are} {present|noted|observed} in {loc}, {more prominent in the upper zones|mild in degree|moderate in degree}.",
        "In {loc}, {low attenuation|low-density} areas {compatible with|consistent with} {pattern} emphysema {are observed|are seen}.",
    ],
    "Arterial wall calcification": [
        "{Atherosclerotic|Calcific} {plaques|calcifications} {are|were} {observed|seen|noted} in the {wall of the {loc}|{loc} wall}.",
        "{Mural|Atheromatous} calcific plaques {are present|were detected} in the {loc}.",
        "{There are|We observed} {calcified|calcific} atherosclerotic {plaques|changes} in the {loc}.",
    ],
    "Coronary artery wall calcification": [
        "{Calcific|Calcified} {plaques|atherosclerotic plaques} {are|were} {observed|seen} in the {coronary arteries|coronary artery walls}, {in the {loc}|along the {loc}}.",
        "Coronary artery calcification {is|was} {noted|observed} in the {loc}.",
        "{There are|We observed} {calcifications|calcific plaques} {along|in} the {loc} coronary {artery|arteries}.",
    ],
    "Lymphadenopathy": [
        "{An enlarged|A pathologically enlarged|A} lymph node {measuring|with a short axis of} {size} {is|was} {observed|seen|detected} in the {loc} {region|station}.",
        "{Lymphadenopathy|Lymph node enlargement} {is noted|was observed} in the {loc} {region|area}, {measuring|with a short axis of} {size}.",
        "In the {loc} {region|station}, a {pathological-sized|enlarged} lymph node of {size} {is seen|was detected}.",
    ],
    "Hiatal hernia": [
        "{A|An} {kind} hiatal hernia {is|was} {observed|seen|noted}.",
        "{Hiatal hernia|Herniation of the stomach through the esophageal hiatus} {is observed|was detected}, {measuring|approx.} {size}.",
    ],
    "Medical material": [
        "{kind} {observed|noted|seen}, {with its tip|its tip} {in the|projecting over the|at the level of the} {loc}.",
        "{Postoperative|Post-surgical} {material|changes} {related to|compatible with} {kind} {are|were} {observed|noted} at the {loc}.",
    ],
}

# Normal statements per report section: (topic, template). Topics are skipped when that label is positive.
NORMALS = [
    ("airway", None, "{Trachea and {both|the} main bronchi are {open|patent}|The trachea and main bronchi are {patent|open} and {normal in calibre|of natural width}}."),
    ("airway", None, "No {occlusive|obstructive} pathology {was detected|is seen} in the trachea and {both|the} main bronchi."),
    ("heart", "Cardiomegaly", "{Heart contour and size are {normal|natural}|Heart dimensions and compartments appear {natural|normal}|The heart is normal in size}."),
    ("heart", "Pericardial effusion", "{No pericardial effusion {was detected|is seen}|Pericardial effusion was not detected|There is no pericardial {effusion|thickening}}."),
    ("vessels", None, "{The widths of the mediastinal main vascular structures are {normal|natural}|Calibrations of mediastinal major vascular structures are {natural|normal}}."),
    ("vessels", "Arterial wall calcification", "{No calcified atherosclerotic plaque {was observed|is seen} in the thoracic aorta|The thoracic aorta is of normal calibre{| without calcification}}."),
    ("vessels", "Coronary artery wall calcification", "{No coronary artery calcification {is seen|was detected}|There is no evidence of coronary {artery calcification|calcific plaques}}."),
    ("lymph", "Lymphadenopathy", "{No {pathologically enlarged|enlarged} lymph {node|nodes} {was|were} detected in the mediastinum{| and {bilateral|both} hilar regions}|No lymph node was observed in the mediastinum in pathological size and appearance}."),
    ("lymph", None, "No lymph node was {observed|detected} in the {supraclavicular fossa|axillary regions} {in pathological size|with pathological size and appearance}."),
    ("esophagus", "Hiatal hernia", "{The esophagus is within normal limits|No pathological increase in wall thickness was detected in the esophagus|Esophagus {calibration|course} {is|was} normal{| and no hiatal hernia is seen}}."),
    ("pleura", "Pleural effusion", "{No pleural effusion{| or thickening} {was detected|is seen}|Pleural effusion-thickening was not detected in {both hemithorax|either hemithorax}|There is no evidence of pleural effusion}."),
    ("lung", None, "{In the evaluation of both lung parenchyma, {the|} aeration is {normal|natural}|Both lungs are {normally|well} aerated}."),
    ("lung", "Lung nodule", "{No {suspicious|pathological} nodule {or mass|} was detected in {both lungs|either lung}|There is no {suspicious|} pulmonary nodule or mass}."),
    ("lung", "Consolidation", "{No {pneumonic infiltration|consolidation} {was detected|is observed} in {both lung parenchyma|either lung}|There is no evidence of consolidation}."),
    ("lung", "Lung opacity", "{No ground-glass {opacity|density} was {observed|detected}|Ground-glass areas were not {observed|seen} in the lungs}."),
    ("lung", "Emphysema", "{No emphysematous {changes|areas} {were|are} {seen|detected}|Lung parenchymal density is {normal|within normal limits}}."),
    ("lung", "Atelectasis", "{No atelectasis {was detected|is seen}|There is no evidence of atelectasis or volume loss}."),
    ("lung", None, "{The {interlobar|major} fissures {are|appear} {natural|normal}|Bronchial wall thickness is {normal|within normal limits}}."),
    ("lung", None, "{Minimal|Mild} {dependent|gravity-dependent} density {increase|changes} {are|is} {observed|noted} in the {posterior|dependent} parts of both lungs{|, likely hypoventilation}."),
    ("abdomen", None, "{Upper abdominal organs included in the sections are {normal|natural}|No significant pathology was detected in the {upper |}abdominal sections}."),
    ("abdomen", None, "{In the sections passing through the upper part of the abdomen, {the |}{bilateral adrenal glands|liver and spleen} {appear|are} {natural|normal}|The liver{, gallbladder|} and spleen are {normal|unremarkable} in the {sections|included sections}}."),
    ("abdomen", None, "No {upper abdominal|} free fluid{-collection|} was {observed|detected} in the sections."),
    ("bone", None, "{No lytic-destructive lesion {was observed|is detected} in {the|} bone structures{| within the study area}|No obvious pathology was detected in bone structures}."),
    ("bone", None, "{Degenerative changes {are observed|are seen} in the thoracic vertebrae|{Osteophytes|Mild spondylotic changes} are {noted|observed} in the thoracic {spine|vertebral corners}}."),
    ("soft", None, "{The thyroid gland {is|appears} {normal|natural} in {size|the sections}|Thoracic wall soft tissues are {normal|unremarkable}}."),
]
NORMALS += [
    ("airway", None, "The {trachea|tracheal lumen} {is|appears} {midline|centrally located} and {patent|of normal calibre} {throughout its course|down to the carina}."),
    ("heart", None, "{Both|The} {cardiac chambers|heart chambers} {appear|are} {proportionate|natural in size} {on this non-contrast examination|within the limits of non-contrast CT}."),
    ("vessels", None, "The {thoracic aorta|ascending aorta} {has|shows} a {normal calibre|natural diameter} {along its visualized course|of approximately 3 cm}."),
    ("vessels", None, "The {pulmonary trunk|main pulmonary artery} {calibre is|diameter is} {within normal limits|normal}{|, measuring approximately 25 mm}."),
    ("lymph", None, "Both {hila|hilar regions} {appear|are} {natural|normal} in {size|configuration} and {density|position} {bilaterally|on both sides}."),
    ("lymph", None, "{Mediastinal|Paratracheal and subcarinal} lymph nodes {are|appear} {of normal size|within physiological limits}{| and shape}."),
    ("esophagus", None, "{The esophagus|Esophageal wall thickness} {appears|is} {normal|within normal limits} {along its course|in the sections}{| through the thorax}."),
    ("pleura", None, "The {costophrenic|costodiaphragmatic} {sinuses|recesses} {are|appear} {open|clear|sharp} {bilaterally|on both sides}{| on the coronal reformats}."),
    ("pleura", None, "{The {right|left} hemidiaphragm|Both diaphragmatic domes} {is|are} {at the normal level|in normal position} with a {smooth|regular} contour."),
    ("lung", None, "{Lung|Pulmonary} {vascular|vessel} {markings|structures} {are|appear} {normal|natural} in {distribution|calibre} {in both lungs|bilaterally}."),
    ("lung", None, "{Evaluation was performed in|Images were reviewed in} {both|} {lung parenchymal|parenchymal} and {mediastinal|soft tissue} windows{| as usual}."),
    ("lung", None, "The {segmental|subsegmental|lobar} bronchi {are|appear} {patent|open} {in both lungs|bilaterally} and {normal in calibre|of natural width}."),
    ("abdomen", None, "The {visualized|included} portions of the {liver|spleen|adrenal glands|pancreas} {are|appear} {unremarkable|normal in size and density|natural}."),
    ("abdomen", None, "{The gallbladder|Gallbladder} {is|appears} {natural|normal} {in the sections|in the included sections}{| and the biliary tree is not dilated}."),
    ("bone", None, "{Vertebral|Thoracic vertebral} {body heights|bodies} {are preserved|are normal|are maintained}{| and the alignment is normal} {throughout|in the thoracic spine}."),
    ("bone", None, "The {sternum|ribs|clavicles} and {other|the} {visible|included} {bone structures|bones} {appear|are} {intact|natural} {for the patient's age|in the sections}."),
    ("soft", None, "{Breast|Axillary|Chest wall} {soft tissues|regions} {are|appear} {symmetric|natural} {bilaterally|on both sides}{| in the sections}."),
    ("soft", None, "{Gynecomastia|Subcutaneous fat planes|Muscle planes} {appear|are} {preserved|natural} {in the thoracic wall|on both sides}."),
]
SECTION_ORDER = ["airway", "heart", "vessels", "lymph", "esophagus", "pleura", "lung", "abdomen", "bone", "soft"]
SECTION_OF = {
    "Lung nodule": "lung", "Lung opacity": "lung", "Consolidation": "lung", "Atelectasis": "lung",
    "Pulmonary fibrotic sequela": "lung", "Emphysema": "lung", "Pleural effusion": "pleura",
    "Pericardial effusion": "heart", "Cardiomegaly": "heart", "Arterial wall calcification": "vessels",
    "Coronary artery wall calcification": "vessels", "Lymphadenopathy": "lymph", "Hiatal hernia": "esophagus",
    "Medical material": "soft",
}
IMPRESSION = {
    "Lung nodule": "{Nodule|Pulmonary nodule} in the {loc}{| ({size})}",
    "Lung opacity": "Ground-glass {opacity|areas} in the {loc}",
    "Consolidation": "{Consolidation|Pneumonic consolidation} in the {loc}",
    "Atelectasis": "Atelectasis in the {loc}",
    "Pulmonary fibrotic sequela": "{Fibrotic sequelae|Sequelae changes} in the {loc}",
    "Pleural effusion": "{amount} {loc} pleural effusion",
    "Pericardial effusion": "{amount} pericardial effusion",
    "Cardiomegaly": "Cardiomegaly",
    "Emphysema": "{Emphysema|Emphysematous changes} in {loc}",
    "Arterial wall calcification": "{Atherosclerotic|Calcific} changes in the {loc}",
    "Coronary artery wall calcification": "Coronary artery calcification",
    "Lymphadenopathy": "{Lymphadenopathy|Enlarged lymph node} in the {loc} region",
    "Hiatal hernia": "Hiatal hernia",
    "Medical material": "{kind}",
}
CLINICAL = ["{Cough|Dyspnea|Shortness of breath}, {fever|chest pain} for {2|3|5|7|10} days.",
            "Follow-up of {pulmonary nodule|known malignancy|pneumonia}.", "{Covid-19|COVID-19} {pneumonia|suspicion}?",
            "{Chest pain|Hemoptysis}, {smoker|ex-smoker}, {evaluation|screening}.", "Preoperative evaluation.",
            "{Lung cancer screening|Staging}, {50|60|70} pack-years."]


def _slots(rec: dict, rng: np.random.Generator) -> dict:
    at = rec["attrs"]
    loc = rec["location"]
    return {"loc": loc, "size": _size(rec["size_mm"], rng), "amount": at.get("amount", "small"),
            "kind": str(at.get("kind", "")) or "solid",
            "pattern": at.get("pattern", ""), "ctr": at.get("ctr", "")}


def write_report(records: list[dict], rng: np.random.Generator, slice_mm: float, clinical_given: bool = True) -> dict:
    """Findings/Impressions/Clinical/Technique text for one scan.

    Sets rec["sentence"] and rec["sentence_span"] (character offsets into Findings) on every record.
    """
    positives = {rec["label"] for rec in records}
    target = int(np.clip(np.round(rng.normal(19, 4.5)), 12, 34))
    by_section: dict[str, list] = {s: [] for s in SECTION_ORDER}
    for rec in records:
        by_section[SECTION_OF[rec["label"]]].append(("pos", rec))
    normals = [n for n in NORMALS if n[1] not in positives]
    n_fill = max(0, target - len(records))
    # negations are ~a third of real report sentences: weight affirmative normal statements up
    weight = np.array([1.0 if NEGATION.search(tpl) else 1.2 for _, _, tpl in normals])
    picks = rng.choice(len(normals), size=min(n_fill, len(normals)), replace=False, p=weight / weight.sum())
    for i in sorted(picks):
        topic, _, tpl = normals[i]
        by_section[topic].append(("normal", tpl))
    while sum(len(v) for v in by_section.values()) < target:       # long reports repeat topics, reworded
        topic, _, tpl = normals[int(rng.integers(len(normals)))]
        by_section[topic].append(("normal", tpl))
    sentences: list[tuple[str, dict | None]] = []
    for section in SECTION_ORDER:
        for kind, item in by_section[section]:
            if kind == "pos":
                tpl = str(rng.choice(POSITIVE[item["label"]]))
                sentences.append((expand(tpl, rng, **_slots(item, rng)), item))
            else:
                text = expand(item, rng)
                if text not in (s for s, _ in sentences):
                    sentences.append((text, None))
    findings, pos = [], 0
    for text, rec in sentences:
        if rec is not None:
            rec["sentence"], rec["sentence_span"] = text, [pos, pos + len(text)]
        findings.append(text)
        pos += len(text) + 1
    if records:
        seen, parts = set(), []
        for rec in records:
            key = (rec["label"], rec["location"])
            if key not in seen:
                seen.add(key)
                parts.append(expand(IMPRESSION[rec["label"]], rng, **_slots(rec, rng)) + ".")
        impressions = " ".join(parts)
    else:
        impressions = expand("{No significant pathology was detected in the thorax|Examination within normal limits"
                             "|No acute cardiopulmonary pathology|Normal chest CT}.", rng)
    clinical = expand(str(rng.choice(CLINICAL)), rng) if clinical_given else MISSING_SECTION
    technique = MISSING_SECTION if rng.random() < 0.05 else expand(
        "{Non-contrast|Unenhanced} {multislice|multidetector} {axial|helical} images of the {thorax|chest} were obtained"
        f" with {slice_mm:g} mm slice thickness, {{and|}} {{coronal and sagittal reformats were reviewed|"
        "evaluated in lung and mediastinal windows}.", rng)
    return {"Findings_EN": " ".join(findings), "Impressions_EN": impressions,
            "ClinicalInformation_EN": clinical, "Technique_EN": technique}
