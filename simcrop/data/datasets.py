"""Torch datasets over preprocessed volumes and their report sentences.

`PretrainDataset` joins four files written by earlier steps:
    manifest.csv       volume_id, scan_id, split, findings, impressions (report text)
    qc.csv             volume_ids that preprocessed successfully (column volume_id)
    sentences.jsonl    one line per volume: {"volume_id", "scan_id", "split", "sentences": [...]}
    <preprocessed>/volumes/<volume_id>.nii.gz   int16 HU, RAS, clipped to [-1000, 1000]

It keeps the volumes of one split that are in qc.csv and have at least one Findings sentence, and says
how many it dropped for which reason. With labels=True (the supervised objective) it also gives each
sample its label vector and drops train volumes without labels (counted as "no labels" in the log): an
all-zero vector would teach "normal" for a scan nobody labelled. An index may be an int or an (index, epoch) pair: the pair is
what `simcrop.train.distributed.StepSampler` yields, and the augmentation of a sample is seeded from
(seed, epoch, index) so it is the same whatever the worker count or resume point.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from simcrop.data.manifest import labels_of, read_manifest
from simcrop.data.transforms import (apply, eval_transform, sample_seed, seed_transform, smaller_axes,
                                     train_transform)

MASK_STREAM = 1                        # sample_seed stream of a report's MLM mask (0: augmentation)

log = logging.getLogger(__name__)
HU_MIN, HU_MAX = -1000.0, 1000.0
# QC columns that change when a volume's voxels do (the data fingerprint); timings and paths do not count
QC_FINGERPRINT = ("output_shape", "output_spacing", "hu_p1", "hu_p50", "hu_p99")


class EmptyDatasetError(ValueError):
    """No volume survived the filters; the message names the files and the counts."""


def load_volume(path: str | os.PathLike) -> torch.Tensor:
    """Read a preprocessed NIfTI -> (1, X, Y, Z) float32 in [-1, 1] (HU clipped, / 1000).

    Raises ValueError unless the volume is 3D and RAS, the preprocess contract.
    """
    img = nib.load(str(path))
    if len(img.shape) != 3:
        raise ValueError(f"{path}: expected a 3D volume, got shape {img.shape}")
    codes = nib.aff2axcodes(img.affine)
    if codes != ("R", "A", "S"):
        raise ValueError(f"{path}: expected RAS orientation (run `simcrop preprocess`), got {''.join(codes)}")
    array = np.asanyarray(img.dataobj)            # int16 as stored (no scaling in preprocess output)
    return scale_hu(array).unsqueeze(0)


def scale_hu(array: np.ndarray) -> torch.Tensor:
    """HU (X, Y, Z) → float32 tensor in [-1, 1] (clipped to ±1000 HU, / 1000): the encoder's input scale."""
    x = torch.from_numpy(np.ascontiguousarray(array)).to(torch.float32)
    return x.clamp_(HU_MIN, HU_MAX).mul_(1.0 / HU_MAX)


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


class PretrainDataset(Dataset):
    """Volumes of one split with their reports; samples are dicts:

    volume_id, scan_id: str
    image:      (1, *crop_size) float32 scaled HU, [-1, 1] (+- intensity_shift after augmentation)
    findings, impressions: str, the report sections from the manifest
    sentences:  list of Findings sentence records {"section", "text", "start", "end", "lesion_ids"},
                offsets into `findings`
    mask_seed:  seed of this sample's report mask (simcrop.text.batch), from (seed, epoch, index)
    lesion_map, organ_map: (X, Y, Z) int16 label maps on the crop, only with maps=True (training
                diagnostics); zeros / -1 where the run has none
    labels:     (n_labels,) float32 0/1 in the order of `self.label_names`, only with labels=True (the
                supervised objective); label_names: the given names, or the keys of the split's first
                labelled manifest row in stored order (CT-RATE's 18, canonical order). Rows without labels
                are dropped ("no labels"); a labelled row missing one of the names is an error.
    """

    def __init__(self, manifest_path, sentences_path, preprocessed_dir, qc_path, split: str = "train",
                 crop_size: Sequence[int] = (96, 96, 48), augment: bool = True, seed: int = 0,
                 flip_prob: float = 0.2, scale_crop: Sequence[float] = (0.8, 1.0), intensity_shift: float = 0.1,
                 intensity_shift_prob: float = 0.1, pad_mode: str = "reflect", maps: bool = False,
                 labels: bool = False, label_names: Sequence[str] | None = None):
        self.crop_size = tuple(int(s) for s in crop_size)
        if len(self.crop_size) != 3 or min(self.crop_size) < 1:
            raise ValueError(f"crop_size must be three positive sizes (x, y, z); got {list(crop_size)}")
        self.split, self.augment, self.seed, self.maps = split, augment, int(seed), bool(maps)
        self.labels = bool(labels)
        self.label_names: list[str] | None = list(label_names) if label_names else None
        self.volumes_dir = Path(preprocessed_dir) / "volumes"
        self.masks_dir = Path(preprocessed_dir) / "masks"
        self.items, self.dropped = self._select(Path(manifest_path), Path(sentences_path), Path(qc_path))
        if augment:
            self.transform = train_transform(self.crop_size, flip_prob, scale_crop, intensity_shift,
                                             intensity_shift_prob, pad_mode)
        else:
            self.transform = eval_transform(self.crop_size, pad_mode)
        self.pad_mode = pad_mode
        self._warned: set[str] = set()

    def _select(self, manifest_path: Path, sentences_path: Path, qc_path: Path) -> tuple[list[dict], dict]:
        manifest = read_manifest(manifest_path)
        rows = manifest[manifest["split"] == self.split]
        if not qc_path.exists():
            raise FileNotFoundError(f"{qc_path}: qc.csv not found (run `simcrop gather` after preprocess)")
        if not sentences_path.exists():
            raise FileNotFoundError(f"{sentences_path}: sentences not found (run `simcrop sentences`)")
        qc = pd.read_csv(qc_path, dtype=str, keep_default_na=False)
        qc_rows = {str(r["volume_id"]): r for r in qc.to_dict("records")}
        ok = set(qc_rows)
        sentences = read_sentences(sentences_path)
        dropped = {"not_in_qc": 0, "no_findings_sentence": 0, "missing_file": 0}
        if self.labels:
            dropped["no_labels"] = 0
            if self.label_names is None:
                self.label_names = next((list(d) for d in map(labels_of, rows.to_dict("records")) if d), None)
        items = []
        for row in rows.to_dict("records"):
            volume_id = str(row["volume_id"])
            if volume_id not in ok:
                dropped["not_in_qc"] += 1
                continue
            record = sentences.get(volume_id, {})
            findings = [s for s in record.get("sentences", []) if s.get("section") == "findings"]
            if not findings:
                dropped["no_findings_sentence"] += 1
                continue
            path = self.volumes_dir / f"{volume_id}.nii.gz"
            if not path.exists():
                dropped["missing_file"] += 1
                continue
            extra = {}
            if self.labels:
                values = labels_of(row)
                if not values:
                    dropped["no_labels"] += 1
                    continue
                missing = [name for name in self.label_names if name not in values]
                if missing:
                    raise ValueError(f"{manifest_path}: volume {volume_id!r} has labels but not {missing[:5]} "
                                     f"(label names: {self.label_names})")
                extra["labels"] = [float(values[name]) for name in self.label_names]
            items.append({**extra, "volume_id": volume_id, "scan_id": str(row["scan_id"]), "path": str(path),
                          "findings": row["findings"], "impressions": row["impressions"], "sentences": findings,
                          "qc": [qc_rows[volume_id].get(k, "") for k in QC_FINGERPRINT]})
        summary = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in dropped.items())
        log.info("pretrain dataset (%s): %d volumes in split, kept %d; dropped %s",
                 self.split, len(rows), len(items), summary)
        if not items:
            raise EmptyDatasetError(
                f"no {self.split!r} volumes to train on: {len(rows)} in split {self.split!r} of {manifest_path}; "
                f"dropped {summary} (qc: {qc_path}, sentences: {sentences_path}, volumes: {self.volumes_dir})")
        return items, dropped

    def __len__(self) -> int:
        return len(self.items)

    def fingerprint(self) -> str:
        """sha256 of what training reads: each kept volume's id, report, sentences and QC record (shape,
        spacing, HU statistics; not timings or paths), in order. A checkpoint trained on other data has
        another fingerprint, without hashing every voxel of a 47k-volume dataset."""
        keys = ("volume_id", "scan_id", "findings", "impressions", "sentences", "qc")
        keys += ("labels",) if self.labels else ()          # unchanged fingerprints for the other objectives
        text = json.dumps([{k: item[k] for k in keys} for item in self.items], sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, epoch = (key, 0) if isinstance(key, (int, np.integer)) else (int(key[0]), int(key[1]))
        item = self.items[index]
        image = load_volume(item["path"])
        small = smaller_axes(image.shape[1:], self.crop_size)
        if small and item["volume_id"] not in self._warned:
            self._warned.add(item["volume_id"])
            log.warning("volume %s has shape %s, smaller than the crop %s along %s: padded (%s; air where "
                        "the volume is under half the crop)", item["volume_id"], tuple(image.shape[1:]),
                        self.crop_size, ",".join(small), self.pad_mode)
        if self.maps:                        # label maps ride along the image's crops and flips
            image = torch.cat([image, *self._label_maps(item["volume_id"], image.shape[1:])])
        if self.augment:
            seed_transform(self.transform, sample_seed(self.seed, epoch, index))
        out = apply(self.transform, image)
        sample = {"volume_id": item["volume_id"], "scan_id": item["scan_id"], "image": out[:1],
                  "findings": item["findings"], "impressions": item["impressions"], "sentences": item["sentences"],
                  "mask_seed": sample_seed(self.seed, epoch, index, MASK_STREAM)}
        if self.labels:
            sample["labels"] = torch.tensor(item["labels"], dtype=torch.float32)
        if self.maps:
            sample.update(lesion_map=out[1].round().short(), organ_map=out[2].round().short())
        return sample

    def _label_maps(self, volume_id: str, shape) -> list[torch.Tensor]:
        """The volume's lesion and organ label maps (1, X, Y, Z) float; zeros (no lesion) and -1 (no organ
        map) where the preprocessed folder has none (real data)."""
        maps = []
        for kind, missing in (("lesion", 0.0), ("organ", -1.0)):
            path = self.masks_dir / f"{volume_id}.{kind}.nii.gz"
            if path.exists():
                array = np.asanyarray(nib.load(str(path)).dataobj)
                if tuple(array.shape) != tuple(shape):
                    raise ValueError(f"{path}: shape {array.shape} differs from its volume's {tuple(shape)}")
                maps.append(torch.from_numpy(np.ascontiguousarray(array)).to(torch.float32)[None])
            else:
                maps.append(torch.full((1, *shape), missing))
        return maps
