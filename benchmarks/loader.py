"""Loader throughput: the pre-training dataset on gzip NIfTI vs the `.b2nd` training cache, same process.

    .venv/bin/python benchmarks/loader.py                  # CT-RATE-sized volume, ViT-B crops (~1 minute)
    .venv/bin/python benchmarks/loader.py --smoke --json out.json    # tiny shapes, seconds (the test)

Synthesises a thorax-like int16 HU volume (default 512 x 512 x 300 at 0.7 x 0.7 x 1 mm, LPS, gzip NIfTI;
the synthetic corpus's soft-kernel noise), preprocesses it through the real `preprocess_volume` to
1.5 x 1.5 x 3 mm as gzip NIfTI and as the `.b2nd` cache in each `preprocess.cache_codec` (lz4hc, the
default; zstd; lz4), then times the real `PretrainDataset` (ViT-B crop 224 x 224 x 112, the training
augmentation: random scale crop, pad, random crop, flips, intensity shift) on each, one thread, the same
(seed, epoch, index) keys, so every file gives the same crops (checked: the samples must be identical).
Also timed: the previous loader path (the whole volume decoded and scaled, then the MONAI chain) on the
NIfTI, what the dataset did before the crop-first read. Each loader runs in three runs of consecutive
samples (a training worker's steady state: each sample is dropped once its digest is taken, as a worker
hands it on), the runs of the loaders interleaved; a sample is timed as CPU time of this single-threaded
process (torch and blosc2 on one thread) and the median per sample is reported: samples per CPU second,
i.e. per core, little disturbed by other processes on a shared machine. Prints samples/s per core, ms per
sample, bytes on disk per volume, and the ratios of the default cache to the NIfTI through the same
dataset and to the previous loader (goal >= 6x). `--json OUT` writes the figures (nifti_samples_per_s,
cache_samples_per_s, ratio, nifti_bytes, cache_bytes, codecs, ...).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from simcrop.config import PreprocessConfig
from simcrop.data.datasets import PretrainDataset
from simcrop.data.manifest import empty_row, write_manifest
from simcrop.data.preprocess import preprocess_volume
from simcrop.data.preprocessed_io import CACHE_CODECS
from simcrop.data.synthetic.corpus import reconstruct
from simcrop.data.transforms import apply, sample_seed, seed_transform
from simcrop.data.preprocessed_io import load_preprocessed

GOAL = 6.0
CACHES = {"cache" if codec == CACHE_CODECS[0] else f"cache_{codec}": codec for codec in CACHE_CODECS}
ROUNDS = 3
FULL = dict(shape=(512, 512, 300), input_spacing=(0.7, 0.7, 1.0), spacing=(1.5, 1.5, 3.0), crop=(224, 224, 112),
            samples=30)
SMOKE = dict(shape=(96, 96, 60), input_spacing=(0.7, 0.7, 1.0), spacing=(1.5, 1.5, 3.0), crop=(32, 32, 16),
             samples=6)


def phantom(shape, spacing, seed: int = 0) -> np.ndarray:
    """(X, Y, Z) int16 HU in LPS voxel order: body, fat, two lungs, mediastinum, spine, table, then the
    synthetic corpus's soft-kernel blur and noise (simcrop.data.synthetic.corpus.reconstruct)."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = shape
    x = ((np.arange(nx) - nx / 2) * spacing[0]).astype(np.float32)[:, None]   # mm, + patient left
    y = ((np.arange(ny) - ny / 2) * spacing[1]).astype(np.float32)[None, :]   # mm, + posterior
    a, b = 160.0 * nx * spacing[0] / 358.4, 115.0 * ny * spacing[1] / 358.4  # body fits any field of view
    body = (x / a) ** 2 + (y / b) ** 2 <= 1
    inner = (x / (0.9 * a)) ** 2 + (y / (0.87 * b)) ** 2 <= 1
    base = np.full((nx, ny), -1000.0, np.float32)
    base[(y > 1.1 * b) & (y < 1.2 * b) & (np.abs(x) < 1.25 * a)] = 200.0      # table
    base[body] = -100.0                                                       # subcutaneous fat
    base[inner] = 40.0                                                        # soft tissue
    spine = x ** 2 + (y - 0.65 * b) ** 2 <= (0.11 * a) ** 2
    heart = x ** 2 + (y + 0.1 * b) ** 2 <= (0.28 * a) ** 2
    hu = np.empty(shape, np.float32)
    for k in range(nz):
        r = (0.34 + 0.19 * np.sin(np.pi * k / max(nz - 1, 1))) * a            # lungs widest mid-chest
        s = base.copy()
        for side in (-1, 1):
            s[((x - side * 0.44 * a) / r) ** 2 + (y / (1.3 * r)) ** 2 <= 1] = -850.0
        s[heart] = 50.0
        s[spine] = 700.0
        hu[:, :, k] = s
    return reconstruct(hu, sharp=False, noise_scale=1.0, rng=rng)


def make_run(root: Path, settings: dict) -> dict:
    """One synthetic CT (gzip NIfTI) → a run folder (manifest, sentences, qc) and both preprocessed formats."""
    affine = np.diag([-settings["input_spacing"][0], -settings["input_spacing"][1], settings["input_spacing"][2], 1.0])
    source = root / "ct.nii.gz"
    nib.save(nib.Nifti1Image(phantom(settings["shape"], settings["input_spacing"]), affine), source)
    row = empty_row()
    row.update(volume_id="v0", patient_id="p0", scan_id="p0_a", split="train", image=str(source), format="nifti",
               source="benchmark", findings="A 9 mm nodule in the right upper lobe.", impressions="Nodule.")
    write_manifest(root / "manifest.csv", [row])
    sentence = {"section": "findings", "text": row["findings"], "start": 0, "end": len(row["findings"]),
                "lesion_ids": []}
    (root / "sentences.jsonl").write_text(json.dumps({"volume_id": "v0", "scan_id": "p0_a", "split": "train",
                                                      "sentences": [sentence]}) + "\n")
    (root / "qc.csv").write_text("volume_id\nv0\n")
    out = {}
    for name in ("nifti", *CACHES):                    # the NIfTI, and the cache in every codec
        fmt, codec = ("nifti", CACHE_CODECS[0]) if name == "nifti" else ("b2nd", CACHES[name])
        cfg = PreprocessConfig(spacing=list(settings["spacing"]), format=fmt, cache_codec=codec)
        start = time.perf_counter()
        record = preprocess_volume(row, root / name, cfg)
        out[name] = {"path": Path(record["output"]), "bytes": Path(record["output"]).stat().st_size,
                     "preprocess_s": time.perf_counter() - start, "shape": record["output_shape"]}
    return out


def dataset(root: Path, fmt: str, crop) -> PretrainDataset:
    return PretrainDataset(root / "manifest.csv", root / "sentences.jsonl", root / fmt, root / "qc.csv",
                           crop_size=crop, augment=True, seed=0)


def keys(n: int) -> list[tuple[int, int]]:
    return [(0, epoch) for epoch in range(n)]          # one volume, a new crop and augmentation per epoch


def whole_volume(ds: PretrainDataset, key) -> torch.Tensor:
    """The previous loader: decode and scale the whole volume, then the chain (same seed)."""
    index, epoch = key
    image = load_preprocessed(ds.items[index]["path"], ds.hu_window)
    seed_transform(ds.transform, sample_seed(ds.seed, epoch, index))
    return apply(ds.transform, image)


def run(settings: dict) -> dict:
    torch.set_num_threads(1)
    n, crop = int(settings["samples"]), tuple(settings["crop"])
    with tempfile.TemporaryDirectory(prefix="simcrop_loader_") as tmp:
        root = Path(tmp)
        files = make_run(root, settings)
        sets = {name: dataset(root, name, crop) for name in ("nifti", *CACHES)}
        loaders = {"whole": lambda key: whole_volume(sets["nifti"], key)}
        loaders.update({name: (lambda key, ds=ds: ds[key]["image"]) for name, ds in sets.items()})
        for load in loaders.values():
            load((0, 10_000))                          # warm-up: first open, lazy imports
        seconds = {name: [] for name in loaders}
        digests = {name: {} for name in loaders}
        names, rounds = list(loaders), min(ROUNDS, n)
        for r in range(rounds):                        # each loader in runs of consecutive samples (a training
            for name in names[r:] + names[:r]:         # worker's steady state), the runs interleaved
                for key in keys(n)[r::rounds]:
                    start = time.process_time()        # CPU seconds of this (single-threaded) process
                    image = loaders[name](key)
                    seconds[name].append(time.process_time() - start)
                    # a worker hands each sample on and drops it: keep a digest, not the 22 MB tensor (holding
                    # them all would time fresh-page faults, not the loader)
                    digests[name][key] = hashlib.sha256(image.numpy().tobytes()).hexdigest()
                    del image
    median = {name: float(np.median(times)) for name, times in seconds.items()}
    identical = all(digests[name] == digests["whole"] for name in loaders)
    return {
        "nifti_samples_per_s": 1 / median["nifti"], "cache_samples_per_s": 1 / median["cache"],
        "ratio": median["nifti"] / median["cache"], "goal_ratio": GOAL,
        "nifti_bytes": files["nifti"]["bytes"], "cache_bytes": files["cache"]["bytes"],
        "cache_codec": CACHE_CODECS[0],
        "codecs": {codec: {"samples_per_s": 1 / median[name], "bytes": files[name]["bytes"],
                           "ratio": median["nifti"] / median[name]} for name, codec in CACHES.items()},
        "whole_volume_samples_per_s": 1 / median["whole"], "ratio_vs_whole_volume": median["whole"] / median["cache"],
        "identical_samples": bool(identical), "samples": n, "threads": 1, "statistic": "median CPU seconds per sample",
        "mean_ms": {name: round(1000 * float(np.mean(times)), 2) for name, times in seconds.items()},
        "input_shape": list(settings["shape"]), "input_spacing": list(settings["input_spacing"]),
        "spacing": list(settings["spacing"]), "preprocessed_shape": files["cache"]["shape"], "crop": list(crop),
        "preprocess_s": {fmt: round(files[fmt]["preprocess_s"], 3) for fmt in files},
    }


def table(r: dict) -> str:
    rows = [("nifti .nii.gz, whole volume (before)", r["whole_volume_samples_per_s"], r["nifti_bytes"]),
            ("nifti .nii.gz", r["nifti_samples_per_s"], r["nifti_bytes"]),
            *((f"cache .b2nd, {codec}" + (" (default)" if codec == r["cache_codec"] else ""),
               c["samples_per_s"], c["bytes"]) for codec, c in r["codecs"].items())]
    shape = "x".join(map(str, r["input_shape"]))
    lines = [f"input {shape} int16 @ {'x'.join(map(str, r['input_spacing']))} mm -> preprocessed "
             f"{r['preprocessed_shape']} @ {'x'.join(map(str, r['spacing']))} mm; crop {'x'.join(map(str, r['crop']))}"
             f" + augmentation; {r['samples']} samples each (median), {r['threads']} thread",
             f"{'loader':<38}{'samples/s/core':>15}{'ms/sample':>11}{'bytes/volume':>14}"]
    lines += [f"{name:<38}{sps:>15.2f}{1000 / sps:>11.1f}{size:>14,}" for name, sps, size in rows]
    lines.append(f"cache ({r['cache_codec']}) / nifti: {r['ratio']:.2f}x (goal >= {GOAL:g}x); cache / whole-volume nifti: "
                 f"{r['ratio_vs_whole_volume']:.2f}x; cache bytes / nifti bytes: "
                 f"{r['cache_bytes'] / r['nifti_bytes']:.2f}; identical samples: {r['identical_samples']}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes (seconds): checks that it runs")
    parser.add_argument("--samples", type=int, help="samples timed per loader (default 30; smoke 6)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"), help="input voxels")
    parser.add_argument("--input-spacing", type=float, nargs=3, metavar=("X", "Y", "Z"),
                        help="input voxel size in mm (default 0.7 0.7 1.0; 0.84 0.84 1.0: a 430 mm field of view, "
                             "the issue's 288 x 288 preprocessed volumes)")
    parser.add_argument("--crop", type=int, nargs=3, metavar=("X", "Y", "Z"), help="crop (default 224 224 112)")
    parser.add_argument("--json", metavar="OUT", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    settings = dict(SMOKE if args.smoke else FULL)
    for key in ("samples", "shape", "input_spacing", "crop"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    result = run(settings)
    result["smoke"] = bool(args.smoke)
    print(table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
