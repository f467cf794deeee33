"""BTCV adapter: an MSD-style `dataset.json` → manifest rows (CT + 13-organ label map).

On-disk convention (`root`): `root/dataset.json` (the file MONAI's BTCV tutorials use) with `training` and
`validation` lists of `{"image": "imagesTr/img0001.nii.gz", "label": "labelsTr/label0001.nii.gz"}`,
paths relative to `root`. An optional `test` list (images without labels) is counted and skipped.
Label values are BTCV_ORGANS (1 spleen … 13 left adrenal gland); the label map becomes `organ_mask`.

Splits: `training` → `train` (ingest holds out `val` per patient), `validation` → `test` (the standard
24 / 6 split reports on those six; model selection must not use them). Each case is its own patient.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from simcrop.data.adapters.ctrate import volume_key
from simcrop.data.downstream_labels import BTCV_ORGANS
from simcrop.data.manifest import empty_row

log = logging.getLogger(__name__)

LISTS = {"training": "train", "validation": "test"}


def read_dataset_json(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"{path}: BTCV dataset.json not found")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(spec, dict) or not any(isinstance(spec.get(name), list) for name in LISTS):
        raise ValueError(f"{path}: expected a 'training' and/or 'validation' list of {{image, label}}")
    return spec


def resolve(root: Path, where: str, entry, key: str) -> Path:
    """`entry[key]` as an existing path under `root`; ValueError naming dataset.json and the entry."""
    if not isinstance(entry, dict) or not isinstance(entry.get(key), str):
        raise ValueError(f"{where}: entry {entry!r} has no {key!r} path")
    path = root / entry[key]
    if not path.exists():
        raise ValueError(f"{where}: entry {entry!r}: {key} file {path} not found")
    return path


def _unlabelled(root: Path, entry) -> dict:
    """A `test` entry of dataset.json (a path, or {"image": path}): listed as skipped, it has no label map."""
    image = entry.get("image") if isinstance(entry, dict) else entry
    return dict(volume_id=volume_key(str(image)), path=str(root / str(image)),
                reason="unlabelled_test: listed under 'test' in dataset.json, which has no label maps")


def read_btcv(root: str | Path, dataset_json: str = "dataset.json",
              source: str = "btcv") -> tuple[list[dict], dict]:
    """Read `root/dataset_json` → (manifest rows with splits train/test, ingest statistics)."""
    root = Path(root)
    path = root / dataset_json
    spec = read_dataset_json(path)
    declared = spec.get("labels") or {}
    named = ({str(v).strip().lower().replace(" ", "_") for v in declared.values()}
             if isinstance(declared, dict) else set())
    if named and not set(BTCV_ORGANS) <= named:
        log.warning("%s: 'labels' %s differ from the expected BTCV organs %s", path, declared, list(BTCV_ORGANS))
    stats = dict(found=0, unlabelled_test_skipped=len(spec.get("test") or []), organ_labels=BTCV_ORGANS,
                 declared_labels=declared, skipped=[_unlabelled(root, entry) for entry in spec.get("test") or []])
    rows, seen = [], {}
    for name, split in LISTS.items():
        for index, entry in enumerate(spec.get(name) or []):
            where = f"{path} ({name}[{index}])"
            image, label = resolve(root, where, entry, "image"), resolve(root, where, entry, "label")
            key = volume_key(image.name)
            if key in seen:
                raise ValueError(f"{where}: image {image.name} already listed as {seen[key]}")
            seen[key] = f"{name}[{index}]"
            row = empty_row()
            row.update(volume_id=key, patient_id=key, scan_id=key, split=split, image=str(image),
                       format="nifti", source=source, organ_mask=str(label))
            rows.append(row)
    stats["found"] = len(rows)
    log.info("BTCV %s: %d labelled cases (%s)", path, len(rows),
             {s: sum(r["split"] == s for r in rows) for s in LISTS.values()})
    return rows, stats
