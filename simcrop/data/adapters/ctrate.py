"""CT-RATE adapter (and the synthetic corpus, laid out exactly like CT-RATE v2): tree + CSVs → manifest rows.

Tree: `{split}/{split}_{P}/{split}_{P}_{s}/{split}_{P}_{s}_{r}.nii.gz` under `train/` + `valid/` (v1) or
`train_fixed/` + `valid_fixed/` (v2). v1 voxels are stored values (HU = slope * x + intercept, from the
metadata CSV) and v1 headers carry no spacing, so both come from the metadata; v2 is HU with a proper
affine and must never be rescaled again (docs/data.md, "Known traps").

Rows come out with a provisional split: CT-RATE `valid` → `test`, `train` → `train`; the patient-level
`val` hold-out is chosen later by `simcrop.data.ingest`. Volumes left out (not a chest CT, no report,
label or metadata row) are listed in the statistics' `skipped` with the reason. Hidden files (names
starting with `.`, such as a killed writer's temporary files or macOS `._` files) are not volumes.
"""
from __future__ import annotations

import ast
import json
import logging
import math
from pathlib import Path

import pandas as pd

from simcrop.data.labels import CTRATE_LABELS, MISSING_SECTION
from simcrop.data.manifest import empty_row
from simcrop.io import DataError, read_csv, read_text

log = logging.getLogger(__name__)

# CT-RATE split → (folder stem, CSV stem for reports/metadata, CSV stem for labels/no_chest, manifest split)
SPLITS = {
    "train": ("train", "train", "train", "train"),
    "valid": ("valid", "validation", "valid", "test"),
}
RELEASE_FOLDERS = {"v1": "{split}", "v2": "{split}_fixed"}
REPORT_COLUMNS = {  # manifest column → CSV column; the first three are required
    "findings": "Findings_EN",
    "impressions": "Impressions_EN",
    "clinical_information": "ClinicalInformation_EN",
    "technique": "Technique_EN",
}
REQUIRED_REPORT_COLUMNS = ["VolumeName", "Findings_EN", "Impressions_EN"]
METADATA_COLUMNS = ["VolumeName", "RescaleSlope", "RescaleIntercept", "XYSpacing", "ZSpacing"]


def volume_key(name: str) -> str:
    """`path/to/train_1_a_1.nii.gz` → `train_1_a_1` (CSV cells and no_chest lines may carry either)."""
    base = str(name).strip().replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in (".nii.gz", ".nii", ".npz"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def clean_section(value) -> str:
    """A report cell as text; CT-RATE's literal `Not given.` (and empty cells) → ``""``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value)
    return "" if text.strip() in ("", MISSING_SECTION) else text


def first_of_duplicates(frame: pd.DataFrame, path: Path, column: str) -> pd.DataFrame:
    """Keep the first row per index value, warning with the duplicated ids (not only their count)."""
    duplicated = frame.index.duplicated()
    if not duplicated.any():
        return frame
    ids = sorted(set(frame.index[duplicated]))
    log.warning("%s: %d duplicated %s row(s) for %d id(s), keeping the first of each: %s%s", path,
                int(duplicated.sum()), column, len(ids), ", ".join(map(str, ids[:20])),
                f" and {len(ids) - 20} more" if len(ids) > 20 else "")
    return frame[~duplicated]


def read_table(path: Path, required: list[str]) -> pd.DataFrame:
    """A CSV read as text (empty cells → ""), indexed by volume key; DataError names file and column."""
    if not path.is_file():
        raise DataError(f"{path}: CSV not found")
    frame = read_csv(path, "CT-RATE CSV", dtype=str, keep_default_na=False)
    for column in required:
        if column not in frame.columns:
            raise DataError(f"{path}: missing required column {column!r} (has {list(frame.columns)[:8]}...)")
    frame.index = frame["VolumeName"].map(volume_key)
    return first_of_duplicates(frame, path, "VolumeName")


def read_no_chest(path: Path) -> set[str]:
    if not path.is_file():
        log.warning("%s not found: no volumes excluded as non-chest for this split", path)
        return set()
    lines = read_text(path, "no_chest list").splitlines()
    return {volume_key(line) for line in lines if line.strip()}


def table_paths(root: Path, split: str) -> dict[str, Path]:
    """The CSV and list files of one CT-RATE split (`train` or `valid`), by role."""
    _, csv_stem, label_stem, _ = SPLITS[split]
    root = Path(root)
    return {"reports": root / "radiology_text_reports" / f"{csv_stem}_reports.csv",
            "labels": root / "multi_abnormality_labels" / f"{label_stem}_predicted_labels.csv",
            "metadata": root / "metadata" / f"{csv_stem}_metadata.csv",
            "no_chest": root / "metadata" / f"no_chest_{label_stem}.txt"}


def table_files(root: str | Path) -> list[Path]:
    """Every CT-RATE table under `root` that exists (what ingest reads besides the volumes)."""
    return [p for split in SPLITS for p in table_paths(Path(root), split).values() if p.is_file()]


def detect_release(root: Path, release: str = "auto") -> tuple[str, str]:
    """Which release lives under `root`, and a sentence saying how that was decided."""
    found = {name: [s for s in SPLITS if (root / pattern.format(split=s)).is_dir()]
             for name, pattern in RELEASE_FOLDERS.items()}
    if release in ("v1", "v2"):
        if not found[release]:
            folders = [RELEASE_FOLDERS[release].format(split=s) for s in SPLITS]
            raise ValueError(f"{root}: release {release} requested but none of {folders} exists")
        return release, f"requested in config (data.release={release})"
    if release != "auto":
        raise ValueError(f"data.release must be auto, v1 or v2, got {release!r}")
    if found["v2"] and found["v1"]:
        return "v2", (f"auto: both v1 ({'/, '.join(found['v1'])}/) and v2 (*_fixed/) folders exist; "
                      "preferring v2 (HU with proper affines)")
    if found["v2"]:
        return "v2", "auto: found " + ", ".join(f"{s}_fixed/" for s in found["v2"])
    if found["v1"]:
        return "v1", "auto: found " + ", ".join(f"{s}/" for s in found["v1"]) + " (no *_fixed/ folders)"
    raise ValueError(f"{root}: no CT-RATE split folder found (expected train/, valid/, train_fixed/ or valid_fixed/)")


def _labels(row: dict) -> str | None:
    try:
        values = {name: int(float(row[name])) for name in CTRATE_LABELS}
    except ValueError:
        return None
    return json.dumps(values)


def _v1_metadata(row: dict) -> dict | None:
    """Slope, intercept and spacing from a v1 metadata row; None when a value is missing or unparsable."""
    try:
        xy = ast.literal_eval(row["XYSpacing"]) if isinstance(row["XYSpacing"], str) else row["XYSpacing"]
        # "[0.34, 0.34]": read as [x, y] as the column name says (in-plane spacing is isotropic in CT-RATE)
        xy = [float(v) for v in (xy if isinstance(xy, (list, tuple)) else [xy, xy])]
        values = dict(rescale_slope=float(row["RescaleSlope"]), rescale_intercept=float(row["RescaleIntercept"]),
                      spacing_x=xy[0], spacing_y=xy[1] if len(xy) > 1 else xy[0], spacing_z=float(row["ZSpacing"]))
    except (ValueError, SyntaxError, TypeError, IndexError):
        return None
    return values if all(math.isfinite(v) for v in values.values()) else None


def read_ctrate(root: str | Path, release: str = "auto", exclude_no_chest: bool = True,
                source: str = "ctrate") -> tuple[list[dict], dict]:
    """Walk a CT-RATE tree → (manifest rows with provisional splits, ingest statistics).

    Paths in the rows are `root`-joined: relative to the working directory when `root` is relative.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: CT-RATE root not found")
    release, how = detect_release(root, release)
    log.info("CT-RATE release %s under %s (%s)", release, root, how)
    stats = dict(release=release, release_detection=how, found=0, excluded_no_chest=0, missing_report=0,
                 missing_labels=0, missing_metadata=0, empty_findings=0, csv_rows_without_volume=0, skipped=[])
    rows: list[dict] = []
    for split, (folder_stem, _, _, manifest_split) in SPLITS.items():
        folder = root / RELEASE_FOLDERS[release].format(split=folder_stem)
        if not folder.is_dir():
            log.warning("%s not found: no CT-RATE %s split", folder, split)
            continue
        # a killed writer's `.<name>.<random>.tmp.nii.gz` (and any hidden file) is not a volume
        files = sorted(p for p in folder.rglob("*.nii.gz") if not p.name.startswith("."))
        stats["found"] += len(files)
        tables = table_paths(root, split)
        # dicts keyed by volume: one lookup per volume stays fast at CT-RATE's 50k volumes
        reports = read_table(tables["reports"], REQUIRED_REPORT_COLUMNS).to_dict("index")
        labels = read_table(tables["labels"], ["VolumeName", *CTRATE_LABELS]).to_dict("index")
        metadata = read_table(tables["metadata"], METADATA_COLUMNS).to_dict("index") if release == "v1" else None
        no_chest = read_no_chest(tables["no_chest"]) if exclude_no_chest else set()
        on_disk = {volume_key(p.name) for p in files}
        stats["csv_rows_without_volume"] += len(set(reports) - on_disk)
        where = {role: _relative(table, root) for role, table in tables.items()}
        for path in files:
            key = volume_key(path.name)
            if key in no_chest:
                _skip(stats, key, path, "excluded_no_chest", f"listed as not a chest CT in {where['no_chest']}")
                continue
            if key not in reports:
                _skip(stats, key, path, "missing_report", f"no row in {where['reports']}")
                continue
            label_json = _labels(labels[key]) if key in labels else None
            if label_json is None:
                _skip(stats, key, path, "missing_labels", f"no row in {where['labels']}" if key not in labels
                      else f"a label cell that is not a number in {where['labels']}")
                continue
            row = empty_row()
            if metadata is not None:
                values = _v1_metadata(metadata[key]) if key in metadata else None
                if values is None:
                    _skip(stats, key, path, "missing_metadata", f"no row in {where['metadata']}"
                          if key not in metadata else f"unparsable rescale or spacing in {where['metadata']}")
                    continue
                row.update(values, apply_rescale=1, spacing_source="metadata")
            report = reports[key]
            for column, csv_column in REPORT_COLUMNS.items():
                row[column] = clean_section(report.get(csv_column))
            stats["empty_findings"] += int(not row["findings"].strip())
            row.update(volume_id=key, patient_id=key.rsplit("_", 2)[0], scan_id=key.rsplit("_", 1)[0],
                       split=manifest_split, image=str(path), format="nifti", source=source,
                       release=release, labels=label_json)
            rows.append(row)
    counts = {k: stats[k] for k in ("excluded_no_chest", "missing_report", "missing_labels", "missing_metadata")}
    log.info("CT-RATE: %d volumes found, %d kept, skipped %s, %d CSV report rows without a volume",
             stats["found"], len(rows), counts, stats["csv_rows_without_volume"])
    return rows, stats


def _skip(stats: dict, volume_id: str, path: Path, category: str, why: str) -> None:
    """Count a left-out volume under `category` and list it by id (ingest_report.json `skipped`)."""
    stats[category] += 1
    stats["skipped"].append(dict(volume_id=volume_id, path=str(path), reason=f"{category}: {why}"))


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def add_synthetic_extras(rows: list[dict], root: str | Path) -> int:
    """Fill `lesion_mask`, `organ_mask`, `lesions` from `root/synthetic/lesions.jsonl`; returns rows without one.

    Each line: {"volume_id", "lesion_mask", "organ_mask", "lesions": [{"id", "label", "location",
    "center_ras_mm", "size_mm", "sentence", "sentence_span": [start, end] in Findings_EN}]}.
    """
    path = Path(root) / "synthetic" / "lesions.jsonl"
    if not path.is_file():
        raise ValueError(f"{path}: synthetic lesion file not found (is {root} a synthetic corpus?)")
    extras = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                extras[volume_key(entry["volume_id"])] = entry
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(f"{path}, line {number}: not a lesion record with a volume_id ({err})") from err
    missing = 0
    for row in rows:
        entry = extras.get(row["volume_id"])
        if entry is None:
            missing += 1
            continue
        for column in ("lesion_mask", "organ_mask"):
            row[column] = str(Path(root) / entry[column]) if entry.get(column) else ""
        row["lesions"] = json.dumps(entry.get("lesions") or [])
    if missing:
        log.warning("%s: no lesion record for %d of %d volumes", path, missing, len(rows))
    return missing
