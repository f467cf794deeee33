"""Label vocabularies of the downstream sets (RadChestCT, CC-CCII, LUNA16, BTCV) and how they map to ours.

What is verified and what is assumed:
- SIMCROP_LABELS: CT-RATE's 18 with the two calcifications merged and mosaic attenuation dropped
  (docs/data.md). The merged name "Arterial wall calcification" is ours.
- RADCHESTCT_ABNORMALITIES: RadChestCT abnormality names (the part before `*` in `<abnormality>*<location>`
  columns) assumed from the RAD-ChestCT paper's vocabulary; **unverified against the real labels file**:
  check `sorted({c.split('*')[0] for c in columns})` on the real CSV and pass a corrected mapping to
  `read_radchestct(abnormalities=...)` if names differ.
- LUNA16_SOURCE_VALUES: `seg-lungs-LUNA16` mask values 3 = left lung, 4 = right lung, 5 = trachea as
  commonly stated for the public masks; **unverified** (no authoritative source found); overridable.
- BTCV_ORGANS: the 13 organs in the order of docs/data.md, values 1..13 as in the BTCV label maps.
"""
from __future__ import annotations

from simcrop.data.labels import CTRATE_LABELS

# CT-RATE label → SimCroP label (None: dropped). OR over the CT-RATE labels mapping to one SimCroP label.
CTRATE_TO_SIMCROP = {name: name for name in CTRATE_LABELS}
CTRATE_TO_SIMCROP.update({"Coronary artery wall calcification": "Arterial wall calcification",
                          "Mosaic attenuation pattern": None})

# SimCroP's 16 classification labels, in CT-RATE order (the merged calcification takes the first one's place).
SIMCROP_LABELS = list(dict.fromkeys(v for v in CTRATE_TO_SIMCROP.values() if v is not None))

# SimCroP label → RadChestCT abnormality names (OR over them and over all their locations). ASSUMED names.
RADCHESTCT_ABNORMALITIES: dict[str, tuple[str, ...]] = {
    "Medical material": ("catheter_or_port", "hardware", "pacemaker_or_defib", "stent", "chest_tube",
                         "gi_tube", "tracheal_tube", "heart_valve_replacement", "clip", "staple"),
    "Arterial wall calcification": ("calcification", "atherosclerosis", "coronary_artery_disease", "plaque"),
    "Cardiomegaly": ("cardiomegaly",),
    "Pericardial effusion": ("pericardial_effusion",),
    "Hiatal hernia": ("hernia",),
    "Lymphadenopathy": ("lymphadenopathy",),
    "Emphysema": ("emphysema",),
    "Atelectasis": ("atelectasis",),
    "Lung nodule": ("nodule", "nodulegr1cm"),
    "Lung opacity": ("opacity", "groundglass"),
    "Pulmonary fibrotic sequela": ("fibrosis", "scarring"),
    "Pleural effusion": ("pleural_effusion",),
    "Peribronchial thickening": ("bronchial_wall_thickening",),
    "Consolidation": ("consolidation",),
    "Bronchiectasis": ("bronchiectasis",),
    "Interlobular septal thickening": ("septal_thickening",),
}
assert list(RADCHESTCT_ABNORMALITIES) == SIMCROP_LABELS

# CC-CCII class folder → label name; the manifest labels are one-hot over CCCCII_LABELS.
CCCCII_CLASSES = {"Normal": "normal", "NCP": "covid19_pneumonia", "CP": "common_pneumonia"}
CCCCII_LABELS = list(CCCCII_CLASSES.values())

# LUNA16: classification label and the organ map written by the adapter (after the remap below).
LUNA16_LABELS = ["nodule"]
LUNA16_ORGANS: dict[str, int] = {"left_lung": 1, "right_lung": 2, "trachea": 3}
# seg-lungs-LUNA16 value → LUNA16_ORGANS name. ASSUMED values (see module docstring).
LUNA16_SOURCE_VALUES: dict[int, str] = {3: "left_lung", 4: "right_lung", 5: "trachea"}

# BTCV label value → organ (the 13 organs of docs/data.md, in the dataset's label order).
BTCV_ORGANS: dict[str, int] = {
    "spleen": 1, "right_kidney": 2, "left_kidney": 3, "gallbladder": 4, "esophagus": 5, "liver": 6,
    "stomach": 7, "aorta": 8, "inferior_vena_cava": 9, "portal_and_splenic_veins": 10, "pancreas": 11,
    "right_adrenal_gland": 12, "left_adrenal_gland": 13,
}


def ctrate_to_simcrop(labels: dict) -> dict:
    """CT-RATE {name: 0/1} (18) → SimCroP {name: 0/1} (16), OR over merged labels."""
    out = {name: 0 for name in SIMCROP_LABELS}
    for name, value in labels.items():
        target = CTRATE_TO_SIMCROP.get(name)
        if target is not None:
            out[target] = max(out[target], int(value))
    return out
