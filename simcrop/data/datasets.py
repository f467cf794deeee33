"""Torch datasets over preprocessed volumes and their report sentences.

`PretrainDataset` joins four files written by earlier steps:
    manifest.csv       volume_id, scan_id, split, findings, impressions (report text)
    qc.csv             volume_ids that preprocessed successfully (column volume_id)
    sentences.jsonl    one line per volume: {"volume_id", "scan_id", "split", "sentences": [...]}
    <preprocessed>/volumes/<volume_id>.b2nd     int16 HU, RAS, clipped to preprocess.hu_window (or .nii.gz)

It keeps the volumes of one split that are in qc.csv, exist and have at least one Findings sentence
(`simcrop.data.selection`, the filter every step shares), and says how many it dropped for which reason.
Images are scaled by `simcrop.data.preprocessed_io.scale_hu` with `hu_window` (default [-1000, 1000]:
HU / 1000; the caller passes preprocess.hu_window). A sample's crop box is drawn from the stored shape
first (`transforms.crop_box`) and only that box is read: from the `.b2nd` training cache only the blocks
under it are decompressed; its pads and flips run on the stored int16, then it is scaled once
(`transforms.after_crop`); the sample equals the transform chain run on the whole scaled volume. With labels=True
(the supervised objective) it also gives each sample its label vector and drops train volumes without labels (counted as "no labels" in the log): an
all-zero vector would teach "normal" for a scan nobody labelled. An index may be an int or an (index,
epoch) pair: the pair is what the trainer's `StepSampler` (train/distributed.py) yields, and the
augmentation of a sample is seeded from (seed, epoch, index) so it is the same whatever the worker count
or resume point.
"""
from __future__ import annotations

import hashlib
import json
import logging
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from simcrop import layout
from simcrop.data.manifest import labels_of, read_manifest
from simcrop.data.selection import select_volumes
from simcrop.data.transforms import (after_crop, crop_box, eval_transform, sample_seed, seed_transform,
                                     smaller_axes, train_transform)
from simcrop.data.preprocessed_io import DEFAULT_HU_WINDOW, load_preprocessed, open_preprocessed, scale_hu

MASK_STREAM = 1                        # sample_seed stream of a report's MLM mask (0: augmentation)

log = logging.getLogger(__name__)
# QC columns that change when a volume's voxels do (the data fingerprint); timings and paths do not count
QC_FINGERPRINT = ("output_shape", "output_spacing", "hu_p1", "hu_p50", "hu_p99")


class EmptyDatasetError(ValueError):
    """No volume survived the filters; the message names the files and the counts."""


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
                 labels: bool = False, label_names: Sequence[str] | None = None,
                 hu_window: Sequence[float] = DEFAULT_HU_WINDOW):
        self.crop_size = tuple(int(s) for s in crop_size)
        if len(self.crop_size) != 3 or min(self.crop_size) < 1:
            raise ValueError(f"crop_size must be three positive sizes (x, y, z); got {list(crop_size)}")
        self.split, self.augment, self.seed, self.maps = split, augment, int(seed), bool(maps)
        self.labels = bool(labels)
        self.label_names: list[str] | None = list(label_names) if label_names else None
        self.hu_window = tuple(float(v) for v in hu_window)     # preprocess.hu_window: the volumes' clip
        self.preprocessed = layout.Preprocessed(preprocessed_dir)
        self.volumes_dir = self.preprocessed.volumes
        self.masks_dir = self.preprocessed.masks
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
        if self.labels and self.label_names is None:     # from the split's first labelled row, kept or not
            self.label_names = next((list(d) for d in map(labels_of, rows.to_dict("records")) if d), None)
        selection = select_volumes(manifest, qc_path, self.preprocessed, self.split, sentences=sentences_path,
                                   labels=self.labels)
        dropped = selection.dropped
        items = []
        for row in selection.rows():
            volume_id = str(row["volume_id"])
            extra = {}
            if self.labels:
                values = labels_of(row)
                missing = [name for name in self.label_names if name not in values]
                if missing:
                    raise ValueError(f"{manifest_path}: volume {volume_id!r} has labels but not {missing[:5]} "
                                     f"(label names: {self.label_names})")
                extra["labels"] = [float(values[name]) for name in self.label_names]
            items.append({**extra, "volume_id": volume_id, "scan_id": str(row["scan_id"]),
                          "path": selection.paths[volume_id], "findings": row["findings"],
                          "impressions": row["impressions"], "sentences": selection.sentences[volume_id],
                          "qc": [selection.qc[volume_id].get(k, "") for k in QC_FINGERPRINT]})
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
        volume = open_preprocessed(item["path"])                  # header only: no voxel decoded yet
        shape = volume.shape
        small = smaller_axes(shape, self.crop_size)
        if small and item["volume_id"] not in self._warned:
            self._warned.add(item["volume_id"])
            log.warning("volume %s has shape %s, smaller than the crop %s along %s: padded (%s; air where "
                        "the volume is under half the crop)", item["volume_id"], tuple(shape),
                        self.crop_size, ",".join(small), self.pad_mode)
        if self.augment:
            seed_transform(self.transform, sample_seed(self.seed, epoch, index))
        box = crop_box(self.transform, shape)                     # the crop, drawn from the shape alone
        if self.maps:                        # label maps ride along the image's crops and flips
            image = load_preprocessed(volume, self.hu_window, box)    # only the voxels under it
            out = after_crop(self.transform, torch.cat([image, *self._label_maps(item["volume_id"], shape, box)]))
        else:                                # pads and flips on the stored int16, then one scale
            out = after_crop(self.transform, volume.read(box)[None],
                             partial(scale_hu, hu_window=self.hu_window, clip=not volume.within(self.hu_window)))
        sample = {"volume_id": item["volume_id"], "scan_id": item["scan_id"], "image": out[:1],
                  "findings": item["findings"], "impressions": item["impressions"], "sentences": item["sentences"],
                  "mask_seed": sample_seed(self.seed, epoch, index, MASK_STREAM)}
        if self.labels:
            sample["labels"] = torch.tensor(item["labels"], dtype=torch.float32)
        if self.maps:
            sample.update(lesion_map=out[1].round().short(), organ_map=out[2].round().short())
        return sample

    def _label_maps(self, volume_id: str, shape, box) -> list[torch.Tensor]:
        """The volume's lesion and organ label maps in `box` (1, *box) float; zeros (no lesion) and -1 (no
        organ map) where the preprocessed folder has none (real data)."""
        maps, size = [], tuple(b.stop - b.start for b in box)
        for kind, missing in (("lesion", 0.0), ("organ", -1.0)):
            path = self.preprocessed.mask(volume_id, kind)
            if path.exists():
                stored = open_preprocessed(path)
                if stored.shape != tuple(shape):
                    raise ValueError(f"{path}: shape {stored.shape} differs from its volume's {tuple(shape)}")
                array = stored.read(box)
                maps.append(torch.from_numpy(np.ascontiguousarray(array)).to(torch.float32)[None])
            else:
                maps.append(torch.full((1, *size), missing))
        return maps
