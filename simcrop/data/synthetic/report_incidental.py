"""Incidental (label-free) findings, clinical information, technique and closing impressions.

INCIDENTAL: (section, tag, template, impression or ""). Incidental findings sit in the text only (they set
no CT-RATE label) as in real reports; the tag removes the normal statements they would contradict.
Written for this project after the style of CT-RATE reports; no report text is copied.
"""
from __future__ import annotations

INCIDENTAL = [
    ("abdomen", "liver", "A millimetric hypodense lesion {is|was} {observed|noted} in the liver{|, likely a cyst|, probably a simple cyst}.", "Hepatic cyst?"),
    ("abdomen", "liver", "A {9|11|13|15|18|22} mm hypodense lesion in liver segment {4|6|7|8} {is|was} {noted|seen}, {compatible with|likely} a {simple cyst|cyst}.", "Probable hepatic cyst"),
    ("abdomen", "liver", "Liver parenchymal density {is|appears} diffusely decreased, {compatible with|suggestive of} hepatic steatosis.", "Hepatic steatosis"),
    ("abdomen", "gb", "{A calcified gallstone {is|was}|A few millimetric calculi {are|were}} {seen|noted} in the gallbladder lumen.", "Cholelithiasis"),
    ("abdomen", "spleen", "{Punctate|Millimetric} calcifications {are|were} {seen|observed} in the spleen, {likely granulomatous|probably sequelae of old granulomatous disease}.", ""),
    ("abdomen", "spleen", "An accessory spleen {measuring|of} {8|10|12|14} mm {is|was} {seen|noted} {adjacent to|near} the splenic hilum.", ""),
    ("abdomen", "adrenal", "A {12|14|16|18} mm nodule {is|was} {seen|noted} in the {left|right} adrenal gland, {likely an adenoma|possibly an adenoma}.", "Adrenal nodule (adenoma?)"),
    ("abdomen", "adrenal", "{Nodular|Mild} thickening of the {left|right} adrenal {gland|limb} {is|was} {observed|noted}.", ""),
    ("abdomen", "kidney", "A {cortical|simple} cyst {measuring|of} {14|18|23|27} mm {is|was} {seen|noted} in the upper pole of the {right|left} kidney.", "Renal cyst"),
    ("abdomen", "kidney", "A {punctate|millimetric} calculus {is|was} {noted|seen} in the {right|left} kidney{| lower pole}.", "Nephrolithiasis"),
    ("abdomen", "pancreas", "The pancreas {appears|is} {atrophic|lipomatous} with {fatty|lipomatous} infiltration, {a common age-related finding|likely age-related}.", ""),
    ("vessels", "aorta", "The ascending aorta {is|appears} {mildly dilated|ectatic}, measuring {40|41|42|43} mm in diameter.", "Ectasia of the ascending aorta"),
    ("vessels", "pa", "The main pulmonary artery {is|appears} {enlarged|prominent}, measuring {31|32|33|34} mm{|, pulmonary hypertension?}.", "Dilated pulmonary trunk"),
    ("vessels", "", "An aberrant right subclavian artery {is|was} {noted|observed} as an anatomical variant.", ""),
    ("vessels", "", "A bovine aortic arch {configuration|variant} {is|was} {noted|observed}.", ""),
    ("esophagus", "thyroid", "A {hypodense|heterogeneous} nodule {measuring|of} {9|12|15|19} mm {is|was} {seen|noted} in the {right|left} thyroid lobe{|, ultrasound correlation is recommended}.", "Thyroid nodule, ultrasound recommended"),
    ("esophagus", "thyroid", "The thyroid gland {is|appears} {enlarged|multinodular} with {heterogeneous|coarse} parenchyma, {compatible with|suggestive of} {goiter|multinodular goiter}.", "Multinodular goiter"),
    ("esophagus", "", "{Fat-density|Soft-tissue} residual thymic tissue {is|was} {seen|noted} in the anterior mediastinum.", ""),
    ("lung", "", "{An azygos fissure|An azygos lobe variant} {is|was} {noted|observed} in the right upper zone.", ""),
    ("bone", "spine", "{Schmorl nodes|Schmorl's nodes} {are|were} {seen|noted} in the {thoracic|lower thoracic} vertebral endplates.", ""),
    ("bone", "spine", "A {typical|small} vertebral hemangioma {is|was} {noted|seen} in the T{6|7|8|9|10|11} vertebral body.", ""),
    ("bone", "bone", "A {sclerotic|dense} focus {compatible with|consistent with} a bone island {is|was} {seen|noted} in the {T8 vertebra|left sixth rib|sternum}.", ""),
    ("bone", "bone", "{A healed|An old} fracture {is|was} {noted|seen} in the {right|left} {fourth|fifth|sixth|seventh} rib {with callus formation|with a smooth callus}.", "Old healed rib fracture"),
    ("bone", "spine", "Thoracic kyphosis {is|appears} {increased|accentuated} with {mild|moderate} anterior wedging of the vertebral bodies.", ""),
    ("bone", "spine", "{Mild|Moderate} {dextroscoliosis|levoscoliosis} of the thoracic spine {is|was} {noted|observed}.", "Thoracic scoliosis"),
    ("bone", "bone", "{Diffuse|Mild} osteopenia {is|was} {noted|seen} in the {vertebrae|bone structures}, {compatible with|in favor of} {age-related changes|osteoporosis}.", ""),
    ("soft", "breast", "An appearance compatible with gynecomastia {is|was} {observed|noted} in the {bilateral|right|left} retroareolar {area|region}.", ""),
    ("soft", "chestwall", "A {well-circumscribed|smoothly marginated} {fat-density|lipomatous} lesion {measuring|of} {25|31|38} mm {is|was} {seen|noted} in the {right|left} {posterior chest wall|subcutaneous tissue}, {likely a lipoma|compatible with a lipoma}.", "Chest wall lipoma"),
    ("soft", "chestwall", "A {sebaceous|epidermal} cyst {measuring|of} {11|14|17} mm {is|was} {seen|noted} in the subcutaneous fat of the {back|upper back}.", ""),
]

CLINICAL = [
    "{Cough|Dyspnea|Shortness of breath|Productive cough} {and|with} {fever|chest pain|fatigue} for {2|3|5|7|10|14} days.",
    "Follow-up of {pulmonary nodule|known malignancy|pneumonia|sarcoidosis|interstitial lung disease}.",
    "{Covid-19|COVID-19} {pneumonia|suspicion}{|?}.",
    "{Chest pain|Hemoptysis|Weight loss}, {smoker|ex-smoker|non-smoker}, {evaluation|screening} requested.",
    "{Preoperative evaluation|Pre-operative assessment} {before|prior to} {orthopedic|abdominal|cardiac} surgery.",
    "{Lung cancer screening|Staging}, {30|40|50|60|70} pack-years.",
    "{Known|History of} {breast|colon|prostate|renal} cancer, {staging|restaging|surveillance}.",
    "{Chronic obstructive pulmonary disease|Asthma|Bronchiectasis}, {exacerbation|worsening dyspnea}.",
    "{Trauma|Fall from height}, chest {pain|tenderness} on the {right|left} side.",
    "{Elevated|Rising} {CRP|inflammatory markers} and {fever|leukocytosis}, {infection focus?|pneumonia?}.",
]
TECHNIQUE = [
    "{Non-contrast|Unenhanced} {multislice|multidetector} {axial|helical} images of the {thorax|chest} were obtained with {slice} mm slice thickness, {and|} {coronal and sagittal reformats were reviewed|evaluated in lung and mediastinal windows}.",
    "{Thorax|Chest} CT was performed without intravenous contrast {using|with} {slice} mm {sections|slice thickness}, {from the lung apices to the adrenal glands|covering the thorax and upper abdomen}.",
    "{Low-dose|Standard-dose} {non-contrast|unenhanced} chest CT {acquired|obtained} in {inspiration|full inspiration}, reconstructed at {slice} mm with {soft tissue and lung|bone and lung|mediastinal and lung} kernels.",
]
NORMAL_IMPRESSION = [
    "{No significant pathology was detected in the thorax|Examination within normal limits|No acute cardiopulmonary pathology|Normal chest CT}.",
    "{No evidence of|No CT findings of} {pneumonia|active infection|malignancy} {in the thorax|in both lungs}.",
    "{Unremarkable|Normal} {non-contrast|unenhanced} {chest|thorax} CT{| for the patient's age}.",
]
RECOMMEND = [
    "Clinical and laboratory correlation is recommended.",
    "{Comparison|Correlation} with previous examinations, if any, is recommended.",
    "{Follow-up|Control} CT {in 3 months|in 6 months|after treatment} is recommended.",
]

INCIDENTAL += [
    ("abdomen", "liver", "A {well-defined|sharply marginated} hypodense lesion {measuring|of} {7|9|12} mm {is|was} {noted|seen} in the {right|left} hepatic lobe, {too small to characterize|which could not be characterized on this non-contrast study}.", "Indeterminate hypodense liver lesion"),
    ("abdomen", "liver", "A {coarse|punctate} calcification {is|was} {seen|noted} in the {right|left} lobe of the liver, {likely granulomatous|probably a calcified granuloma}.", ""),
    ("abdomen", "gb", "The gallbladder {is|was} {not visualized|absent}, {compatible with|consistent with} {previous cholecystectomy|a history of cholecystectomy}, and surgical clips {are|were} {seen|noted}.", "Status post cholecystectomy"),
    ("abdomen", "gb", "{Sludge|Dense bile} {is|was} {seen|noted} {layering|settling} in the dependent part of the gallbladder.", ""),
    ("abdomen", "kidney", "{Bilateral|Multiple} {cortical|parapelvic} renal cysts {are|were} {seen|noted}, the largest {measuring|reaching} {21|26|34} mm on the {right|left}.", "Renal cysts"),
    ("abdomen", "adrenal", "{Bilateral|Mild bilateral} adrenal {hyperplasia|thickening} {is|was} {noted|observed}{| without a discrete nodule}.", ""),
    ("abdomen", "", "{Colonic interposition|Interposition of the colon} between the liver and the {right hemidiaphragm|diaphragm} {is|was} {noted|seen}, {a normal variant|an anatomical variant}.", ""),
    ("abdomen", "", "{Diverticula|A few diverticula} {are|were} {seen|noted} in the {splenic flexure|transverse colon} included in the sections.", ""),
    ("abdomen", "pancreas", "{Coarse|Punctate} calcifications {are|were} {seen|noted} in the pancreatic {head|body}, {suggestive of|compatible with} chronic pancreatitis.", "Pancreatic calcifications (chronic pancreatitis?)"),
    ("vessels", "", "{A persistent left superior vena cava|A left-sided superior vena cava} {is|was} {noted|identified} as an anatomical variant.", ""),
    ("vessels", "", "{Calcification of the mitral annulus|Mitral annular calcification} {is|was} {seen|noted}.", ""),
    ("vessels", "", "{Aortic valve calcification|Calcification of the aortic valve leaflets} {is|was} {noted|seen}{|, echocardiographic correlation is advised}.", "Aortic valve calcification"),
    ("esophagus", "", "{A small|A millimetric} {hypodense|cystic} lesion {is|was} {seen|noted} in the {posterior mediastinum|paraesophageal region}, {likely a bronchogenic cyst|possibly a foregut duplication cyst}.", ""),
    ("esophagus", "", "{Fluid|Debris} {is|was} {seen|noted} in the {distal|mid} esophageal lumen, {possibly reflux|which may relate to reflux}.", ""),
    ("lung", "", "{An accessory|A prominent} inferior accessory fissure {is|was} {noted|observed} in the {right|left} lower zone as an anatomical variant.", ""),
    ("lung", "", "{Calcified|Punctate calcified} {hilar|mediastinal} lymph nodes {are|were} {seen|noted}, {compatible with|suggestive of} {old granulomatous disease|previous granulomatous infection}.", ""),
    ("pleura", "", "{A calcified pleural plaque {is|was}|Calcified pleural plaques {are|were}} {seen|noted} along the {right|left} {diaphragmatic|posterolateral} pleura.", "Calcified pleural plaque"),
    ("bone", "bone", "{Sclerotic|Degenerative} changes {are|were} {seen|noted} in the {acromioclavicular|glenohumeral} joints {bilaterally|on the right}.", ""),
    ("bone", "spine", "{Anterior|Bridging} osteophytes {are|were} {seen|noted} along the thoracic spine, {compatible with|suggestive of} diffuse idiopathic skeletal hyperostosis.", "DISH of the thoracic spine"),
    ("bone", "spine", "{A mild|An old} compression fracture {is|was} {noted|seen} in the T{9|10|11|12} vertebral body with {less than 25 %|mild} height loss.", "Old vertebral compression fracture"),
    ("bone", "bone", "{Pectus excavatum|A mild pectus excavatum deformity} of the {anterior chest wall|sternum} {is|was} {noted|observed}.", ""),
    ("bone", "bone", "{A cervical rib|A bifid rib} {is|was} {noted|seen} on the {right|left} as an anatomical variant.", ""),
    ("soft", "chestwall", "{Postoperative|Post-surgical} {changes|scar tissue} {are|were} {seen|noted} in the {right|left} {axilla|breast} with {metallic clips|surgical clips}.", "Postoperative changes in the breast"),
    ("soft", "breast", "{A well-circumscribed|An oval} nodular density {measuring|of} {8|11|14} mm {is|was} {seen|noted} in the {right|left} breast{|, mammographic correlation is recommended}.", "Breast nodule, correlate with mammography"),
    ("soft", "", "{Mild|Diffuse} {subcutaneous edema|soft tissue edema} {is|was} {seen|noted} in the {lower|posterior} chest wall.", ""),
]
CLINICAL += [
    "{Persistent|Chronic} cough for {3 weeks|2 months|several months}, {night sweats|weight loss|hoarseness}.",
    "{Fever|High fever} and {myalgia|sore throat}, {PCR positive|PCR pending|contact with a COVID-19 patient}.",
    "{Suspected|Rule out} {pulmonary embolism|pneumothorax|interstitial lung disease}, {tachycardia|desaturation}.",
    "{Rheumatoid arthritis|Scleroderma|Sarcoidosis}, {screening for lung involvement|dyspnea on exertion}.",
    "{Oxygen saturation|SpO2} {88|90|92} %, {bilateral crackles|wheezing} on auscultation.",
    "{Smoker|Heavy smoker} with {abnormal chest radiograph|opacity on chest X-ray}.",
]
TECHNIQUE += [
    "{Helical|Spiral} {CT|computed tomography} of the chest without contrast, {slice} mm {axial sections|slices}, {lung and soft tissue windows|mediastinal and parenchymal windows}.",
    "{Thin-section|Volumetric} {unenhanced|non-contrast} thorax CT in the supine position, {reconstructed|reformatted} at {slice} mm.",
]
NORMAL_IMPRESSION += [
    "{Lungs|The lungs} {are|appear} {clear|free of infiltrates}{| and there is no pleural effusion}.",
    "{No CT evidence of|No findings suggestive of} {COVID-19 pneumonia|viral pneumonia|infection} in the lung parenchyma.",
]
RECOMMEND += [
    "CT may be false negative in the {first few days|early phase} of infection.",
    "{Evaluation together with|Correlation with} {clinical findings|laboratory results} is {advised|suggested}.",
]
