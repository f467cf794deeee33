"""Benchmark: our preprocessing against a plain MONAI chain on CT-RATE-sized volumes, same process.

    .venv/bin/python benchmarks/preprocess.py --volumes 3 --threads 1

Generates thorax-like phantoms (int16 HU, LPS affine, gzip NIfTI, default 512 x 512 x 200 at
0.7 x 0.7 x 1.5 mm), then times per volume, file in → int16 NIfTI out:
- ours:  simcrop.data.preprocess.preprocess_volume (load, validate, RAS, resample, window, crop/pad,
         write, QC statistics and sidecar);
- MONAI: LoadImage → Orientation("RAS") → Spacing(pixdim) → ScaleIntensityRange(clip) →
         ResizeWithPadOrCrop → SaveImage (int16).
Prints volumes/s per core for each, their ratio, whether the output shape and affine are identical,
and the max/mean absolute voxel difference in HU.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from simcrop.config import PreprocessConfig
from simcrop.data.preprocess import preprocess_volume


def phantom(shape, spacing, seed: int) -> np.ndarray:
    """Thorax-like (X, Y, Z) int16 HU volume in LPS voxel order: body, fat, lungs, vessels, spine, table."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = shape
    x = (np.arange(nx) - nx / 2) * spacing[0]           # mm, + toward patient left (L)
    y = (np.arange(ny) - ny / 2) * spacing[1]           # mm, + toward posterior (P)
    xx, yy = np.meshgrid(x, y, indexing="ij")
    body_a, body_b = 160 + 10 * rng.random(), 115 + 10 * rng.random()
    body = (xx / body_a) ** 2 + (yy / body_b) ** 2 <= 1
    inner = (xx / (body_a - 15)) ** 2 + (yy / (body_b - 15)) ** 2 <= 1
    table = (yy > body_b + 20) & (yy < body_b + 30) & (np.abs(xx) < 200)
    slice2d = np.full((nx, ny), -1000, np.int16)
    slice2d[table] = 200
    slice2d[body] = -100                               # subcutaneous fat
    slice2d[inner] = 40                                # soft tissue
    spine = (xx ** 2 + (yy - body_b + 40) ** 2) <= 18 ** 2
    volume = np.empty(shape, np.int16)
    for k in range(nz):
        t = k / max(nz - 1, 1)
        lung_r = 55 + 30 * np.sin(np.pi * t)           # lungs widest mid-chest
        s = slice2d.copy()
        for side in (-1, 1):
            lung = ((xx - side * 70) / lung_r) ** 2 + (yy / (lung_r * 1.3)) ** 2 <= 1
            s[lung] = -850
        s[(xx ** 2 + (yy + 10) ** 2) <= 45 ** 2] = 50  # heart/mediastinum
        s[spine] = 700
        volume[:, :, k] = s
    noise = rng.integers(-20, 21, size=shape, dtype=np.int16)
    volume += noise
    return volume


def make_inputs(folder: Path, n: int, shape, spacing) -> list[Path]:
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])      # LPS, like DICOM-derived files
    affine[:3, 3] = [180.0, 180.0, -300.0]
    paths = []
    for i in range(n):
        path = folder / f"bench_{i}.nii.gz"
        nib.save(nib.Nifti1Image(phantom(shape, spacing, seed=i), affine), path)
        paths.append(path)
    return paths


def monai_chain(spacing, window, size):
    from monai.transforms import (Compose, LoadImage, Orientation, ResizeWithPadOrCrop,
                                  ScaleIntensityRange, Spacing)

    lo, hi = window
    steps = [LoadImage(image_only=True, ensure_channel_first=True), Orientation(axcodes="RAS"),
             Spacing(pixdim=spacing, mode="bilinear"),
             ScaleIntensityRange(a_min=lo, a_max=hi, b_min=lo, b_max=hi, clip=True)]
    if size is not None:
        steps.append(ResizeWithPadOrCrop(spatial_size=size, mode="constant", constant_values=lo))
    return Compose(steps)


def run(n: int, shape, spacing_in, cfg: PreprocessConfig, threads: int) -> dict:
    from monai.transforms import SaveImage

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="simcrop_bench_") as tmp:
        tmp = Path(tmp)
        inputs = make_inputs(tmp, n, shape, spacing_in)
        chain = monai_chain(cfg.spacing, cfg.hu_window, cfg.size)
        saver = SaveImage(output_dir=tmp / "monai", output_ext=".nii.gz", output_dtype=np.int16,
                          resample=False, separate_folder=False, print_log=False)
        ours_s, monai_s, same_geometry, diffs = 0.0, 0.0, True, []
        for i, path in enumerate(inputs):
            start = time.perf_counter()
            record = preprocess_volume({"volume_id": f"v{i}", "image": str(path), "format": "nifti"},
                                       tmp / "ours", cfg)
            ours_s += time.perf_counter() - start
            start = time.perf_counter()
            out = chain(str(path))
            saver(out)
            monai_s += time.perf_counter() - start
            ours = nib.load(record["output"])
            ref = np.rint(out[0].numpy()).astype(np.float32)
            same_geometry &= (ours.shape == ref.shape
                              and np.allclose(ours.affine, out.affine.numpy(), atol=1e-4))
            if ours.shape == ref.shape:
                diffs.append(np.abs(np.asanyarray(ours.dataobj).astype(np.float32) - ref))
        diff = np.concatenate([d.ravel() for d in diffs]) if diffs else np.array([np.nan])
        return {"ours_vps": n / ours_s / threads, "monai_vps": n / monai_s / threads,
                "same_geometry": bool(same_geometry), "max_diff": float(diff.max()),
                "mean_diff": float(diff.mean()), "out_shape": tuple(ours.shape)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 200], metavar=("X", "Y", "Z"))
    parser.add_argument("--input-spacing", type=float, nargs=3, default=[0.7, 0.7, 1.5])
    parser.add_argument("--spacing", type=float, nargs=3, default=None,
                        help="target mm (x y z); default: PreprocessConfig().spacing")
    parser.add_argument("--size", type=int, nargs=3, default=None, help="centre crop/pad (voxels)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    cfg = PreprocessConfig()
    if args.spacing is not None:
        cfg.spacing = list(args.spacing)
    cfg.size = args.size
    result = run(args.volumes, tuple(args.shape), args.input_spacing, cfg, args.threads)
    print(f"input {tuple(args.shape)} @ {args.input_spacing} mm int16 .nii.gz, x{args.volumes}; "
          f"target {cfg.spacing} mm, size {cfg.size} -> {result['out_shape']}; {args.threads} thread(s)")
    print(f"{'chain':<8}{'volumes/s/core':>16}")
    print(f"{'ours':<8}{result['ours_vps']:>16.3f}")
    print(f"{'monai':<8}{result['monai_vps']:>16.3f}")
    print(f"speed-up ours/monai: {result['ours_vps'] / result['monai_vps']:.2f}x")
    print(f"identical geometry (shape, affine): {result['same_geometry']}; "
          f"|ours - monai| HU: max {result['max_diff']:.3g}, mean {result['mean_diff']:.3g}")
    return result


if __name__ == "__main__":
    main()
