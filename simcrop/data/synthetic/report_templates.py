"""Positive-finding templates: one sentence per planted lesion (Findings) and per label (Impressions).

Grammar (see reports.expand): `{a|b}` picks one alternative (nested, innermost first), `{slot}` fills a
slot, `<macro>` expands a MACROS entry first. Articles are fixed afterwards ("a enlarged" → "an enlarged").
Slots: where (location with its determiner: "the right upper lobe", "both lower lobes"), size (bare size:
"12 mm", "1.2 cm", "12 x 9 mm"), kind, pattern, amount, side, ctr, count, device. Subjects and verbs are
chosen together so that number agreement holds in every combination (tests/data/synthetic/test_reports.py).
Written for this project after the style of CT-RATE reports; no report text is copied.
"""
from __future__ import annotations

MACROS = {
    "<seen>": "{observed|seen|noted|detected|identified|visualized|demonstrated|present}",
    "<is>": "{is|was}",
    "<are>": "{are|were}",
    "<approx>": "{||||approximately |about |approx. |roughly }",
    "<in>": "{in|within}",
    "<ctx>": "{|||||| as far as can be evaluated| in the study area| on this examination| on the current images|"
             " within the limits of the study| on non-contrast images}",
}

POSITIVE = {
    "Lung nodule": [
        "A {size} {kind} nodule <is> <seen> in {where}.",
        "{There is|We observed|There was} a {kind} {nodule|nodular lesion} measuring <approx>{size} in {where}.",
        "In {where}, a {size} {kind} nodule with {smooth|lobulated|spiculated|slightly irregular|sharply defined} {contours|margins|borders} <is> <seen>.",
        "A {well-circumscribed|well-defined|smoothly marginated|lobulated|spiculated} {kind} nodule of <approx>{size} <is> <seen> <in> {where}.",
        "{A|One} {subpleural|peripheral|perifissural|parenchymal|centrally located} {kind} nodule {measuring|of} {size} <is> <seen> in {where}{|, and follow-up is recommended|, which warrants follow-up CT}.",
        "{where} {contains|harbors} a {kind} nodule of <approx>{size} with {smooth|lobulated|irregular|well-defined} {margins|borders}.",
        "{A|The} {kind} pulmonary nodule in {where} {measures|has a diameter of|has a long axis of} <approx>{size}.",
    ],
    "Lung opacity": [
        "{A ground-glass opacity|An area of ground-glass opacity|A patchy ground-glass density} measuring <approx>{size} <is> <seen> in {where}.",
        "{Patchy|Focal|Faint|Peripheral} ground-glass {opacities|densities|areas} <are> <seen> in {where}{|, {compatible with|suggestive of|which may represent} {an infectious process|inflammation|atypical pneumonia|alveolitis}}.",
        "In {where}, there is a {subpleural|peribronchovascular|peripheral|centrilobular} ground-glass {opacity|density increase} of <approx>{size}.",
        "Ground-glass {attenuation|density increase} extending over <approx>{size} <is> <seen> in {where}.",
        "{A nodular|A hazy|An ill-defined} ground-glass {opacity|area} with {indistinct margins|blurred borders} <is> <seen> <in> {where}.",
        "Increased parenchymal attenuation with a ground-glass appearance <is> <seen> in {where}, {about|approximately|up to} {size} in {diameter|size|extent}.",
    ],
    "Consolidation": [
        "{An area of consolidation|A consolidated area|A focus of consolidation} measuring <approx>{size} <is> <seen> in {where}{|, with air bronchograms|, containing air bronchograms|, with surrounding ground-glass opacity}.",
        "In {where}, there is {a dense|a patchy|a segmental|a wedge-shaped} consolidation of <approx>{size}.",
        "{Pneumonic|Dense|Airspace} consolidation with {air bronchograms|an air bronchogram pattern} <is> <seen> in {where}, {measuring|reaching} <approx>{size}.",
        "{A consolidation|A consolidative opacity} {compatible with|suggestive of|consistent with} {pneumonia|an infectious process|lobar pneumonia} <is> <seen> in {where}.",
        "{Parenchymal|Airspace} consolidation <is> <seen> in {where}, {extending over|spanning|covering} <approx>{size}{|, predominantly in the dependent portion}.",
    ],
    "Atelectasis": [
        "{pattern} atelectasis <is> <seen> in {where}.",
        "{pattern} atelectatic {changes|bands} <are> <seen> in {where}{|, measuring <approx>{size} in length}.",
        "In {where}, {pattern|passive|compressive} atelectasis <is> <seen>{| with mild volume loss}.",
        "{A band|An area} of {pattern} atelectasis, {about|approximately|up to} {size} long, <is> <seen> in {where}.",
        "There is {pattern} atelectasis in {where}{|, likely related to hypoventilation|, probably due to hypoventilation}.",
    ],
    "Pulmonary fibrotic sequela": [
        "{Linear|Band-like|Reticular} fibrotic {densities|strands|bands} <are> <seen> in {where}.",
        "{Sequela|Post-inflammatory|Fibrotic} {changes|densities} <are> <seen> in {where}, {likely post-inflammatory|in favor of old sequelae|compatible with sequelae}.",
        "In {where}, {linear|parenchymal|pleuroparenchymal} fibrotic {bands|strands} <are> <seen>{| with slight volume loss}.",
        "{A fibrotic band|A linear fibrotic density|A sequela fibrotic band} {about|approximately} {size} long <is> <seen> in {where}.",
        "Fibrotic sequela changes <are> <seen> in {where}{|, unchanged in appearance|, consistent with an old inflammatory process}.",
    ],
    "Pleural effusion": [
        "{A|} {amount} pleural effusion <is> <seen> {on the {side} side|in the {side} hemithorax}.",
        "{Pleural effusion|Pleural fluid} with a {maximum|greatest} {depth|thickness} of <approx>{size} <is> <seen> in the {side} hemithorax.",
        "In the {side} hemithorax, {a|} {amount} pleural effusion <is> <seen>{|, layering dependently|, extending into the posterior costophrenic recess}.",
        "{amount} {side} pleural effusion, {measuring|reaching} <approx>{size} in {depth|thickness}, <is> <seen>.",
        "There is a {amount} {side}-sided pleural effusion{| layering in the posterior costophrenic recess}.",
    ],
    "Pericardial effusion": [
        "{A|} {amount} pericardial effusion {reaching|measuring} <approx>{size} in {thickness|depth} <is> <seen>.",
        "Pericardial {effusion|fluid} with a {maximum|greatest} thickness of <approx>{size} <is> <seen>{| around the heart}.",
        "There is a {amount} pericardial effusion{|, up to {size} thick|, most prominent along the {inferior|anterior} wall}.",
        "{amount} pericardial {fluid|effusion} <is> <seen> {surrounding the heart|in the pericardial space}, {about|approximately|up to} {size} thick.",
    ],
    "Cardiomegaly": [
        "{The heart is enlarged|The heart size is increased|Cardiomegaly is present}{|, with a cardiothoracic ratio of {ctr}}.",
        "{Heart dimensions are|Cardiac dimensions are|The cardiac silhouette is|Heart size is} {increased|enlarged}{| in favor of cardiomegaly}.",
        "Cardiomegaly <is> <seen>, with a transverse cardiac diameter of <approx>{size}.",
        "The cardiothoracic ratio is {increased|elevated} ({ctr}), {consistent with|compatible with|in keeping with} cardiomegaly.",
        "{An enlarged heart|Enlargement of the cardiac chambers} <is> <seen>, {predominantly affecting the left ventricle|with all chambers appearing enlarged|more prominent on the left}.",
    ],
    "Emphysema": [
        "{pattern} emphysematous changes <are> <seen> in {where}.",
        "{pattern} emphysema <is> <seen> in {where}, {more prominent in the upper zones|mild in degree|moderate in degree|predominantly in the apical segments}.",
        "In {where}, {low-attenuation|low-density|hypoattenuating} areas <are> <seen>, {compatible with|consistent with} {pattern} emphysema.",
        "There are {pattern} emphysematous {areas|changes} {in|involving} {where}.",
        "{pattern} emphysema with {scattered|several} {small|subpleural} bullae <is> <seen> in {where}.",
        "The lung parenchyma {shows|demonstrates} {pattern} emphysematous changes, {most pronounced|predominantly} in {where}.",
    ],
    "Arterial wall calcification": [
        "{Atherosclerotic|Calcific|Calcified atheromatous} {plaques|calcifications} <are> <seen> in the wall of {where}.",
        "{Mural|Atheromatous|Scattered} calcific plaques <are> <seen> {in|along} {where}.",
        "There {are|were} {calcified|calcific} atherosclerotic {plaques|changes} in {where}.",
        "{where} {shows|contains|demonstrates} {scattered|several|a few} calcified atherosclerotic plaques.",
        "{Calcific atherosclerosis|Atherosclerotic calcification} of {where} <is> <seen>{|, {mild|moderate} in degree}.",
        "{count} calcified plaques <are> <seen> in {where}{|, compatible with atherosclerosis}.",
    ],
    "Coronary artery wall calcification": [
        "{Calcific|Calcified} {plaques|atherosclerotic plaques} <are> <seen> {in|along} {where}.",
        "Coronary artery calcification <is> <seen> {in|along} {where}.",
        "{There are|We observed} {calcifications|calcific plaques|atherosclerotic calcifications} {along|in} {where}.",
        "{Atherosclerotic|Calcific} changes <are> <seen> in the {wall of the coronary arteries|coronary artery walls}, {mainly|predominantly} {in|along} {where}.",
        "{count} {calcified|calcific} plaques <are> <seen> in the coronary {arteries|tree}, {mainly|particularly} {in|along} {where}.",
    ],
    "Lymphadenopathy": [
        "{An enlarged|A pathologically enlarged|A} lymph node {measuring|with a short axis of} <approx>{size} <is> <seen> in {where}.",
        "{Lymphadenopathy|Lymph node enlargement} <is> <seen> in {where}, {measuring|with a short axis of|with a short-axis diameter of} <approx>{size}.",
        "In {where}, {a|an} {enlarged|pathologically sized|rounded} lymph node of <approx>{size} <is> <seen>.",
        "The largest {enlarged|pathological} lymph node {is located|lies|is seen} in {where} and {measures|has a short axis of} <approx>{size}.",
        "A lymph node {reaching|exceeding} pathological size ({size} in short axis) <is> <seen> in {where}.",
    ],
    "Hiatal hernia": [
        "{A|} {kind} hiatal hernia <is> <seen>.",
        "{Hiatal hernia|Herniation of the stomach through the esophageal hiatus} <is> <seen>, {measuring|with a diameter of} <approx>{size}.",
        "{A|} {kind} type hiatal hernia <is> <seen> at the {lower end of the esophagus|esophageal hiatus|gastroesophageal junction}.",
        "Part of the {gastric fundus|stomach} {herniates|protrudes} through the esophageal hiatus into the {lower mediastinum|thorax}, {consistent with|compatible with} a {kind} hiatal hernia.",
        "The {distal esophagus|gastroesophageal junction} {lies|is located} above the diaphragm, with a {kind} hiatal hernia of <approx>{size}.",
    ],
    "Medical material/sternotomy wires": [
        "{Sternotomy wires|Median sternotomy wires|Sternal cerclage wires} <are> <seen>{|, compatible with previous cardiac surgery|, consistent with a history of median sternotomy}.",
        "{Postoperative|Post-surgical} changes related to median sternotomy, with {intact|stable|continuous} sternal wires, <are> <seen>.",
        "Metallic {sternotomy|sternal} sutures <are> <seen> in the {sternum|anterior chest wall}{|, related to previous cardiac surgery}.",
        "{Several|Multiple} {metallic|dense} {wire|cerclage} densities <are> <seen> along the sternum after median sternotomy.",
    ],
    "Medical material/catheter": [
        "{device} <is> <seen>, with its tip {in|projecting over|at the level of} {the cavoatrial junction|the superior vena cava-right atrium junction|the right atrium}.",
        "{device} {entering|inserted} from the right {subclavian|anterior chest wall} region <is> <seen>, its tip {located|lying} in {the right atrium|the distal superior vena cava}.",
        "{Medical material|Foreign material} consistent with {device} <is> <seen>, its tip projecting over the {right atrium|distal superior vena cava}.",
        "The tip of {device} <is> <seen> at the {cavoatrial junction|junction of the superior vena cava and right atrium}.",
    ],
    "Bronchiectasis": [
        "{kind} bronchiectasis <is> <seen> in {where}.",
        "{kind} bronchiectatic changes <are> <seen> in {where}{|, with bronchial lumen diameters up to {size}}.",
        "In {where}, {dilated|ectatic} bronchi {larger than the accompanying arteries|showing a signet-ring appearance|with thin walls} <are> <seen>.",
        "{kind} bronchiectasis, with bronchi up to {size} in diameter, <is> <seen> in {where}.",
        "{Several|A few|Multiple} bronchi in {where} are dilated{|, measuring up to {size}}, {consistent with|compatible with} {kind} bronchiectasis.",
        "There {are|were} {kind} bronchiectatic changes in {where}{|, likely post-infectious|, probably sequelae of previous infection}.",
    ],
    "Peribronchial thickening": [
        "Peribronchial thickening <is> <seen> in {where}.",
        "{Bronchial wall|Peribronchial} thickening <is> <seen> {in|involving} {where}{|, {suggestive of|compatible with} {bronchitis|small airway inflammation|airway inflammation}}.",
        "In {where}, the bronchial walls {are|appear} thickened{|, with peribronchial cuffing}.",
        "{Thickened|Mildly thickened} bronchial walls with peribronchial cuffing <are> <seen> in {where}.",
        "{Peribronchial|Peribronchovascular} interstitial thickening <is> <seen> in {where}, {about|approximately|up to} {size} thick.",
        "There is {mild|diffuse|patchy} peribronchial {wall thickening|thickening} in {where}{|, more prominent centrally}.",
    ],
    "Interlobular septal thickening": [
        "Interlobular septal thickening <is> <seen> in {where}.",
        "{Smooth|Mild|Patchy} interlobular septal thickening <is> <seen> in the {subpleural areas|periphery} of {where}.",
        "In {where}, {thickened interlobular septa|interlobular septal thickenings} <are> <seen>{|, predominantly subpleural|, mainly in the periphery}.",
        "A reticular pattern due to interlobular septal thickening <is> <seen> in {where}.",
        "Reticular opacities reflecting thickened interlobular septa <are> <seen> in {where}.",
        "{Thickened interlobular septa <are>|Septal thickening <is>} <seen> along the {subpleural|peripheral} {parts|portions} of {where}{|, outlining secondary pulmonary lobules}.",
    ],
    "Mosaic attenuation pattern": [
        "{A mosaic attenuation pattern|Mosaic attenuation} <is> <seen> in {where}.",
        "In {where}, {a mosaic attenuation pattern|mosaic attenuation|a mosaic perfusion pattern} <is> <seen>{|, {suggesting|suggestive of} {small airway disease|air trapping|small vessel disease}}.",
        "{Patchy|Geographic} areas of {decreased|lower} attenuation alternating with {normal|denser} lung parenchyma <are> <seen> in {where}, {consistent with|compatible with} a mosaic attenuation pattern.",
        "{Heterogeneous|Inhomogeneous} lung attenuation with a mosaic {pattern|appearance} <is> <seen> in {where}{| (small airway disease? small vessel disease?)}.",
        "Mosaic attenuation <is> <seen> in {where}, {likely|probably|possibly} {due to|reflecting} {air trapping|small airway disease}.",
    ],
}

IMPRESSION = {
    "Lung nodule": ["{A|} {size} {kind} nodule in {where}{|, follow-up is recommended}", "{Pulmonary nodule|Nodule} in {where}"],
    "Lung opacity": ["Ground-glass {opacity|opacities|areas} in {where}{|, infection?|, inflammatory process?}",
                     "{Patchy|Focal} ground-glass densities in {where}"],
    "Consolidation": ["{Consolidation|Pneumonic consolidation} in {where}", "Consolidation in {where}, compatible with pneumonia"],
    "Atelectasis": ["{pattern} atelectasis in {where}", "Atelectatic changes in {where}"],
    "Pulmonary fibrotic sequela": ["{Fibrotic sequelae|Sequela changes|Fibrotic bands} in {where}"],
    "Pleural effusion": ["{amount} {side} pleural effusion", "{Pleural effusion|Pleural fluid} on the {side}"],
    "Pericardial effusion": ["{amount} pericardial effusion", "Pericardial effusion ({size})"],
    "Cardiomegaly": ["Cardiomegaly", "{Enlarged heart|Increased heart size} (cardiomegaly)"],
    "Emphysema": ["{pattern} emphysema in {where}", "{Emphysematous changes|Emphysema} in {where}"],
    "Arterial wall calcification": ["{Atherosclerotic|Calcific} changes in {where}", "Aortic atherosclerosis"],
    "Coronary artery wall calcification": ["Coronary artery calcification", "Calcific plaques in the coronary arteries"],
    "Lymphadenopathy": ["{Lymphadenopathy|Enlarged lymph node} in {where}", "{Mediastinal|Hilar} lymphadenopathy ({size})"],
    "Hiatal hernia": ["{A|} {kind} hiatal hernia", "Hiatal hernia"],
    "Medical material/sternotomy wires": ["Status post median sternotomy", "{Sternotomy wires|Postoperative sternal changes}"],
    "Medical material/catheter": ["{device} with its tip in the {right atrium|cavoatrial junction}", "{device} in place"],
    "Bronchiectasis": ["{kind} bronchiectasis in {where}", "Bronchiectatic changes in {where}"],
    "Peribronchial thickening": ["Peribronchial thickening in {where}", "Bronchial wall thickening in {where}{|, bronchitis?}"],
    "Interlobular septal thickening": ["Interlobular septal thickening in {where}", "Septal thickening in {where}"],
    "Mosaic attenuation pattern": ["Mosaic attenuation in {where}{| (small airway disease?)}", "Mosaic attenuation pattern"],
}

KIND_WORDS = {
    "solid": "{solid|solid|soft-tissue density}", "part-solid": "{part-solid|partly solid|mixed-density}",
    "calcified": "{calcified|densely calcified|calcific}", "sliding": "{sliding|axial}",
    "small sliding": "small sliding", "paraesophageal": "{paraesophageal|rolling}",
    "cylindrical": "{cylindrical|tubular}", "varicose": "varicose", "traction": "traction",
}
DEVICES = {"catheter": "{a central venous catheter|a central line|a venous catheter}",
           "port catheter": "{a port catheter|an implanted port catheter|a chest port catheter}"}
CORONARY = {"LAD": "{the LAD|the left anterior descending artery|the left anterior descending coronary artery}",
            "LAD and circumflex": "{the LAD and circumflex arteries|the left anterior descending and circumflex arteries}",
            "left main and LAD": "{the left main and LAD|the left main coronary artery and the LAD}"}
COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
