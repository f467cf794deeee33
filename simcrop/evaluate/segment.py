"""UNETR segmentation fine-tuning and evaluation (method.md §5, the official `Down-stream/Segmentation`).

Data: volumes `<run>/preprocessed/volumes/<id>.nii.gz` with label maps `preprocessed/masks/<id>.organ.nii.gz`
or `<id>.lesion.nii.gz`. `label_map` names how to read them: "organ" (the synthetic corpus: 1 right lung,
2 left lung, 3 airway, 4 heart, 5 aorta, 6 bone), "luna16" (LUNA16_ORGANS), "btcv" (BTCV_ORGANS), all
read from the `.organ` file, or "lesion" (any value > 0 is lesion). `classes` picks and orders the
foreground classes; output channel 0 is background, channel k is classes[k - 1]; every other label
becomes background. Default classes: LUNA16's task (left lung, right lung, airway or trachea) and all
13 BTCV organs.

Training: each step takes `batch_size` volumes, pads each to the crop with air (label 0), and cuts
`samples_per_volume` crops by MONAI `RandCropByPosNegLabeld` (pos 1 : neg 1; negative centres only
inside the scan, image > -1000 HU). No flips: they would swap left and right lungs. The whole UNETR
(encoder included) trains with DiceCE (softmax, one-hot targets), AdamW lr 1e-4, weight decay 1e-5,
linear warmup + cosine per step. Validation every `eval_every` steps and at the end by sliding-window
inference (window = crop, overlap 0.5, air outside the volume); the best-val weights are tested.
Dice per foreground class (`DiceMetric(include_background=False)`), per volume, averaged over volumes
where the class is present in the ground truth (MONAI's ignore_empty); `mean_dice` averages the classes.
Volumes: `simcrop.data.selection` (manifest ∩ QC ∩ volume and mask files). Splits and the `val_is_test`
option: `simcrop.data.splits.split_ids`; data fractions are nested patient-level subsets of the training
volumes (`nested_fractions`, by class presence). Dice: `simcrop.evaluate.metrics.DiceAccumulator` (a class
without any score is NaN in memory, null in the JSON).
"""
from __future__ import annotations

import dataclasses

import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.transforms import Compose, RandCropByPosNegLabeld, SpatialPadd
from tqdm import tqdm

from simcrop import layout
from simcrop.data.downstream_labels import BTCV_ORGANS, LUNA16_ORGANS
from simcrop.data.selection import usable_volumes
from simcrop.data.splits import nested_fractions, split_ids
from simcrop.data.transforms import AIR, sample_seed
from simcrop.data.preprocessed_io import DEFAULT_HU_WINDOW, hu_scale, read_preprocessed
from simcrop.evaluate.metrics import MEAN_DICE, DiceAccumulator, json_safe
from simcrop.evaluate.probe_features import build_encoder
from simcrop.io import write_json_atomic
from simcrop.model.unetr import UNETR
from simcrop.optim import build_optimizer, build_scheduler, clip_gradients

log = logging.getLogger(__name__)
ORGAN_LABELS = {"right_lung": 1, "left_lung": 2, "airway": 3, "heart": 4, "aorta": 5, "bone": 6}
# label_map -> {class name: stored value}; every organ table is read from the `.organ` mask file.
ORGAN_TABLES = {"organ": ORGAN_LABELS, "luna16": LUNA16_ORGANS, "btcv": BTCV_ORGANS}
LABEL_MAPS = (*ORGAN_TABLES, "lesion")
DEFAULT_CLASSES = {"organ": ("left_lung", "right_lung", "airway"), "luna16": ("left_lung", "right_lung", "trachea"),
                   "btcv": tuple(BTCV_ORGANS), "lesion": ("lesion",)}


def mask_kind(label_map: str) -> str:
    """Which mask file (`<id>.<kind>.nii.gz`) a label map reads."""
    if label_map not in LABEL_MAPS:
        raise ValueError(f"label_map must be one of {LABEL_MAPS}; got {label_map!r}")
    return "lesion" if label_map == "lesion" else "organ"


def remap_labels(mask: np.ndarray, label_map: str, classes: Sequence[str]) -> np.ndarray:
    """Stored label map (X, Y, Z) -> uint8 with 0 background and k for classes[k - 1]."""
    out = np.zeros(mask.shape, dtype=np.uint8)
    if label_map == "lesion":
        if list(classes) != ["lesion"]:
            raise ValueError(f"lesion masks have one class, 'lesion'; got {list(classes)}")
        out[mask > 0] = 1
        return out
    mask_kind(label_map)
    table = ORGAN_TABLES[label_map]
    for k, name in enumerate(classes, 1):
        if name not in table:
            raise ValueError(f"unknown {label_map} class {name!r}; choose from {sorted(table)}")
        out[mask == table[name]] = k
    return out


class SegmentationCases:
    """Volumes and remapped label maps; with `in_memory` each is read once and kept (int16 / uint8, about
    2.3 MB per demo volume; turn it off for large sets).

    case(i) -> {"id", "image": (1, X, Y, Z) float32 scaled HU in [-1, 1], "label": (1, X, Y, Z) int64}.
    The image is the stored HU clipped to `hu_window`, kept as int16 and scaled on the way out by
    (HU - centre) / half-width: a division, as this module always did (the dataset multiplies by the
    reciprocal, which differs in the last bit for about half of the HU values; switching would change
    fine-tuning results).
    """

    def __init__(self, items: Sequence[tuple[str, str, str]], label_map: str, classes: Sequence[str],
                 in_memory: bool = True, cache: dict | None = None, hu_window: Sequence[float] = DEFAULT_HU_WINDOW):
        self.items, self.label_map, self.classes = list(items), label_map, list(classes)
        self.hu_window = tuple(float(v) for v in hu_window)
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        if in_memory:
            self._cache = {} if cache is None else cache

    def subset(self, ids: Sequence[str]) -> "SegmentationCases":
        """The cases named in ids, sharing this one's memory cache."""
        by_id = {item[0]: item for item in self.items}
        return SegmentationCases([by_id[v] for v in ids], self.label_map, self.classes,
                                 self._cache is not None, self._cache, self.hu_window)

    def __len__(self) -> int:
        return len(self.items)

    def _label(self, i: int) -> torch.Tensor:
        return torch.from_numpy(remap_labels(read_preprocessed(self.items[i][2]), self.label_map,
                                             self.classes))[None]

    def case(self, i: int) -> dict:
        vid, image_path, label_path = self.items[i]
        lo, hi, centre, half = hu_scale(self.hu_window)
        if self._cache is not None and vid in self._cache:
            image, label = self._cache[vid]
        else:
            hu = np.clip(read_preprocessed(image_path), lo, hi)
            image, label = torch.from_numpy(np.rint(hu).astype(np.int16))[None], self._label(i)
            if label.shape != image.shape:
                raise ValueError(f"{label_path}: label shape {tuple(label.shape[1:])} != image shape "
                                 f"{tuple(image.shape[1:])}")
            if self._cache is not None:
                self._cache[vid] = (image, label)
        return {"id": vid, "image": (image.float() - centre) / half, "label": label.long()}

    def presence(self) -> np.ndarray:
        """(N, K) 0/1: which foreground classes each case contains (reads the label maps only)."""
        k = np.arange(1, len(self.classes) + 1)
        return np.stack([np.isin(k, np.unique(self._label(i).numpy())).astype(float) for i in range(len(self))])


def crop_sampler(crop: Sequence[int], samples_per_volume: int) -> Compose:
    crop = tuple(int(s) for s in crop)
    return Compose([
        SpatialPadd("image", crop, value=AIR), SpatialPadd("label", crop, value=0),
        RandCropByPosNegLabeld(["image", "label"], label_key="label", spatial_size=crop, pos=1, neg=1,
                               num_samples=samples_per_volume, image_key="image", image_threshold=AIR),
    ])


def _plain(x) -> torch.Tensor:
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


@torch.no_grad()
def segment_dice(model: UNETR, cases: SegmentationCases, overlap: float = 0.5, sw_batch_size: int = 2,
                 progress: bool = False) -> dict:
    """Sliding-window Dice per foreground class -> {"mean_dice", "dice": {class: float (NaN: never present)},
    "n_volumes"}."""
    model.eval()
    dice = DiceAccumulator(cases.classes)
    device = next(model.parameters()).device
    for i in tqdm(range(len(cases)), desc="segment eval", disable=not progress):
        case = cases.case(i)
        logits = sliding_window_inference(case["image"][None].to(device), model.img_size, sw_batch_size, model,
                                          overlap=overlap, cval=AIR)
        dice.add(logits.argmax(1, keepdim=True).cpu(), case["label"][None])
    return {**dice.result(), "n_volumes": len(cases)}


def train_segmentation(model: UNETR, train: SegmentationCases, val: SegmentationCases, steps: int = 500,
                       batch_size: int = 2, samples_per_volume: int = 2, lr: float = 1e-4, min_lr: float = 1e-6,
                       weight_decay: float = 1e-5, warmup_steps: int | None = None, eval_every: int = 100,
                       grad_clip: float = 1.0, overlap: float = 0.5, seed: int = 0,
                       progress: bool = True) -> tuple[UNETR, dict]:
    """Fine-tune `model` for `steps` steps; keep the weights with the best val mean Dice.

    Returns (model at its best evaluation, {"best_step", "val_mean_dice", "history": [(step, val, loss)]}).
    """
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"need training and validation volumes; got {len(train)} and {len(val)}")
    sampler = crop_sampler(model.img_size, samples_per_volume)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = build_optimizer(model, lr, weight_decay, betas=(0.9, 0.999))
    warmup = max(1, steps // 10) if warmup_steps is None else warmup_steps
    scheduler = build_scheduler(optimizer, lr, min(min_lr, lr), warmup, steps)
    gen = np.random.default_rng(seed)
    best, best_state, best_step, history, running = -math.inf, None, -1, [], []
    bar = tqdm(range(steps), desc="segment train", disable=not progress)
    for step in bar:
        model.train()
        images, labels = [], []
        for j, i in enumerate(gen.choice(len(train), size=batch_size, replace=len(train) < batch_size)):
            sampler.set_random_state(seed=sample_seed(seed, step, j))
            for crop in sampler(train.case(int(i))):
                images.append(_plain(crop["image"]))
                labels.append(_plain(crop["label"]))
        device = next(model.parameters()).device
        loss = loss_fn(model(torch.stack(images).float().to(device)), torch.stack(labels).to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(model, grad_clip)
        optimizer.step()
        scheduler.step()
        running.append(loss.item())
        bar.set_postfix(loss=f"{running[-1]:.3f}")
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            dice = segment_dice(model, val, overlap)[MEAN_DICE]        # NaN: no class present in val
            history.append((step + 1, dice, float(np.mean(running))))
            log.info("segment step %d: train loss %.4f, val mean Dice %s", step + 1, np.mean(running), dice)
            running = []
            score = -math.inf if dice is None or math.isnan(dice) else dice
            if score > best or best_state is None:
                best, best_step = score, step + 1
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return model, {"best_step": best_step, "val_mean_dice": None if best == -math.inf else best, "history": history}


def segmentation_cases(run_dir, ids: Sequence[str], label_map: str, classes: Sequence[str],
                       in_memory: bool = True, hu_window: Sequence[float] = DEFAULT_HU_WINDOW) -> SegmentationCases:
    pre = layout.DataDir(run_dir).preprocessed
    items = [(v, str(pre.volume(v)), str(pre.mask(v, mask_kind(label_map)))) for v in ids]
    return SegmentationCases(items, label_map, classes, in_memory, hu_window=hu_window)


def evaluate_segmentation(cfg, encoder_path, run_dir, out_json, *, label_map: str = "organ",
                          classes: Sequence[str] | None = None, vit_overrides: dict | None = None,
                          in_memory: bool = True, progress: bool = True, **overrides) -> dict:
    """Fine-tune UNETR from `encoder_path` (None: random init) per data fraction; test Dice -> out_json.

    The settings are `cfg.segment`; `overrides` replace single fields of it (`steps=40`, `crop=(32, 32, 16)`).
    label_map/classes: the dataset's (`simcrop.evaluate.targets.segment_settings`). segment.max_eval_volumes
    caps the val and test volumes (first N of each split; CPU demos only: a 96 x 96 x 48 window takes ~2 s
    on two CPU cores). The JSON's "n" gives the counts used. segment.official_vit runs the encoder as the
    official UNETR's ViT (see simcrop.model.unetr).
    """
    sc = dataclasses.replace(cfg.segment, **overrides)
    fractions, steps, crop, protocol, batch_size = sc.fractions, sc.steps, sc.crop, sc.protocol, sc.batch_size
    samples_per_volume, lr, eval_every, feature_size = sc.samples_per_volume, sc.lr, sc.eval_every, sc.feature_size
    overlap, seed, official_vit = sc.overlap, sc.seed, bool(sc.official_vit)
    max_eval_volumes = sc.max_eval_volumes or None
    run_dir, out_json = Path(run_dir), Path(out_json)
    classes = list(classes or DEFAULT_CLASSES[label_map])
    manifest = usable_volumes(run_dir, mask=mask_kind(label_map)).frame
    splits = split_ids(manifest, protocol, cfg.data.val_fraction, cfg.data.split_seed)
    if max_eval_volumes is not None:
        splits.update({s: splits[s][:max_eval_volumes] for s in ("val", "test")})
    cases = {s: segmentation_cases(run_dir, splits[s], label_map, classes, in_memory, cfg.preprocess.hu_window)
             for s in splits}
    patients = dict(zip(manifest["volume_id"], manifest["patient_id"]))
    subsets = nested_fractions(splits["train"], [patients[v] for v in splits["train"]], fractions, seed,
                               cases["train"].presence())
    results = {}
    for f, subset in subsets.items():
        model = UNETR(build_encoder(cfg.model, crop, encoder_path, vit_overrides, seed), len(classes) + 1,
                      feature_size=feature_size, official_vit=official_vit)
        train = cases["train"].subset(subset)
        model, info = train_segmentation(model, train, cases["val"], steps, batch_size, samples_per_volume, lr,
                                         eval_every=eval_every, overlap=overlap, seed=seed, progress=progress)
        test = segment_dice(model, cases["test"], overlap, progress=progress)
        results[f"{100 * f:g}"] = {"fraction": f, "n_train": len(subset),
                                   "n_train_patients": len({patients[v] for v in subset}),
                                   "best_step": info["best_step"], "val_mean_dice": info["val_mean_dice"],
                                   "history": info["history"], "test": test}
        log.info("segment %g%%: n_train %d, val mean Dice %s, test mean Dice %s", 100 * f, len(subset),
                 info["val_mean_dice"], test[MEAN_DICE])
    metrics = {"label_map": label_map, "classes": classes, "protocol": protocol,
               "encoder": str(encoder_path) if encoder_path else "random", "crop": list(crop), "steps": steps,
               "lr": lr, "batch_size": batch_size, "samples_per_volume": samples_per_volume,
               "feature_size": feature_size, "overlap": overlap, "seed": seed, "official_vit": official_vit,
               "n": {s: len(splits[s]) for s in splits},
               "fractions": results}
    write_json_atomic(out_json, json_safe(metrics))
    return metrics
