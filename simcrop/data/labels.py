"""Label vocabularies shared by adapters, the synthetic corpus and evaluation."""

# CT-RATE's 18 abnormality columns, in the canonical order of multi_abnormality_labels/*.csv.
CTRATE_LABELS = [
    "Medical material",
    "Arterial wall calcification",
    "Cardiomegaly",
    "Pericardial effusion",
    "Coronary artery wall calcification",
    "Hiatal hernia",
    "Lymphadenopathy",
    "Emphysema",
    "Atelectasis",
    "Lung nodule",
    "Lung opacity",
    "Pulmonary fibrotic sequela",
    "Pleural effusion",
    "Mosaic attenuation pattern",
    "Peribronchial thickening",
    "Consolidation",
    "Bronchiectasis",
    "Interlobular septal thickening",
]

# Report cells that mean "this section is absent" in CT-RATE.
MISSING_SECTION = "Not given."
