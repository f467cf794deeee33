"""Which volumes of a run (or a downstream set) are usable: the one filter every step applies.

A volume is usable for a split when it is in the manifest (of that split), passed QC (its id is in qc.csv),
and its preprocessed file exists; a caller may also need Findings sentences (pre-training, zero-shot,
retrieval, grounding), labels (supervised objective, probe, zero-shot labels) or a mask file
(segmentation). Rows keep manifest order; `dropped` counts, per reason, the volumes of the split left out,
checked in the order QC, sentences, file, labels, mask (a volume counts once, for the first reason).

    select_volumes(manifest, qc, preprocessed, split, ...)   explicit files (PretrainDataset's arguments)
    usable_volumes(data_dir, split, ...)                     a run folder (`simcrop.layout.DataDir`)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from simcrop import layout
from simcrop.data.manifest import labels_of, read_manifest


def read_sentences(path: str | os.PathLike) -> dict[str, dict]:
    """sentences.jsonl -> {volume_id: record}."""
    records = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{line_no}: not valid JSON: {err}") from err
                records[str(record["volume_id"])] = record
    return records


def findings_sentences(record: dict) -> list[dict]:
    return [s for s in record.get("sentences", []) if s.get("section") == "findings"]


def read_qc(path) -> dict[str, dict]:
    """qc.csv -> {volume_id: QC record (strings)}; a friendly error when preprocess has not been gathered."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: qc.csv not found (run `simcrop gather` after preprocess)")
    qc = pd.read_csv(path, dtype=str, keep_default_na=False)
    return {str(r["volume_id"]): r for r in qc.to_dict("records")}


@dataclass
class Selection:
    """frame: the kept manifest rows (manifest order, original index); in_split: rows of the split before
    filtering; dropped: {reason: count}; paths: volume path per kept id; qc: QC record per kept id;
    sentences: Findings sentence records per kept id (only when asked for); masks: mask path per kept id."""
    frame: pd.DataFrame
    in_split: int
    dropped: dict[str, int]
    paths: dict[str, str] = field(default_factory=dict)
    qc: dict[str, dict] = field(default_factory=dict)
    sentences: dict[str, list[dict]] = field(default_factory=dict)
    masks: dict[str, str] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [str(v) for v in self.frame["volume_id"]]

    def rows(self) -> list[dict]:
        return self.frame.to_dict("records")

    def summary(self) -> str:
        return ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in self.dropped.items())


def select_volumes(manifest, qc, preprocessed, split: str | None = None, *, sentences=None, labels: bool = False,
                   mask: str | None = None) -> Selection:
    """The usable volumes (module docstring).

    manifest: manifest.csv path or its DataFrame; qc: qc.csv path, or None to skip the QC check (a folder
    that was never gathered); preprocessed: the `preprocessed/` folder (`layout.Preprocessed` or path);
    split: None for every split; sentences: sentences.jsonl path to require >= 1 Findings sentence;
    labels: require a non-empty labels dict; mask: require `<id>.<mask>.nii.gz` (lesion | organ).
    """
    frame = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
    if split is not None:
        frame = frame[frame["split"] == split]
    pre = preprocessed if isinstance(preprocessed, layout.Preprocessed) else layout.Preprocessed(preprocessed)
    qc_rows = read_qc(qc) if qc is not None else None
    records = None
    if sentences is not None:
        if not Path(sentences).exists():
            raise FileNotFoundError(f"{sentences}: sentences not found (run `simcrop sentences`)")
        records = read_sentences(sentences)
    # only the checks asked for have a counter, in checking order (the dataset's log line lists them)
    dropped = {}
    if qc_rows is not None:
        dropped["not_in_qc"] = 0
    if records is not None:
        dropped["no_findings_sentence"] = 0
    dropped["missing_file"] = 0
    if labels:
        dropped["no_labels"] = 0
    if mask is not None:
        dropped["no_mask"] = 0
    out = Selection(frame=frame, in_split=len(frame), dropped=dropped)
    keep = []
    for index, row in zip(frame.index, frame.to_dict("records")):
        volume_id = str(row["volume_id"])
        if qc_rows is not None and volume_id not in qc_rows:
            dropped["not_in_qc"] += 1
            continue
        if records is not None:
            found = findings_sentences(records.get(volume_id, {}))
            if not found:
                dropped["no_findings_sentence"] += 1
                continue
        path = pre.volume(volume_id)
        if not path.exists():
            dropped["missing_file"] += 1
            continue
        if labels and not labels_of(row):
            dropped["no_labels"] += 1
            continue
        if mask is not None:
            mask_path = pre.mask(volume_id, mask)
            if not mask_path.exists():
                dropped["no_mask"] += 1
                continue
            out.masks[volume_id] = str(mask_path)
        keep.append(index)
        out.paths[volume_id] = str(path)
        if qc_rows is not None:
            out.qc[volume_id] = qc_rows[volume_id]
        if records is not None:
            out.sentences[volume_id] = found
    out.frame = frame.loc[keep]
    return out


def usable_volumes(data_dir, split: str | None = None, *, sentences: bool = False, labels: bool = False,
                   mask: str | None = None) -> Selection:
    """`select_volumes` on a run folder's manifest.csv, qc.csv, sentences.jsonl and preprocessed/."""
    data = data_dir if isinstance(data_dir, layout.DataDir) else layout.DataDir(data_dir)
    return select_volumes(data.manifest, data.qc, data.preprocessed, split,
                          sentences=data.sentences if sentences else None, labels=labels, mask=mask)
