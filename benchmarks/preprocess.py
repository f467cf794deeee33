"""Benchmark: preprocessing per volume against its floor (nibabel's bare load + decode of the same file) and
against a plain MONAI chain, stage by stage, in one process.

    .venv/bin/python benchmarks/preprocess.py              # full: CT-RATE-sized inputs, shared real CTs, 1/2 workers
    .venv/bin/python benchmarks/preprocess.py --quick      # seconds: one small synthetic input, no scaling

Inputs (gzip NIfTI unless said):
- `phantom`: a thorax-like phantom, CT-RATE-sized (default 512 x 512 x 300 int16 at 0.7 x 0.7 x 1 mm, LPS);
- `real-up`: the shared real chest CT (../shared/data) upsampled to the same size, with CT-like noise;
- the shared real CTs as they are (small: fixed costs dominate) and the shared DICOM series (its floor is
  SimpleITK's read of the series, not nibabel's).
Per input, the median over --repeats of seconds per volume (BLAS and torch at one thread):
  floor     nib.load(path) + np.asanyarray(img.dataobj)
  load      simcrop.data.volume_io.load_volume            to_hu, validate: simcrop.data.preprocess
  grid      preprocess.to_output_grid: reorient, anti-aliased resampling, window, round, int16
  qc        simcrop.data.qc.qc_stats
  budget    load + to_hu + validate + grid + qc: the part whose target is <= 1.5 x floor
  write     preprocess.format's writer, the volume alone (not part of the budget)
  e2e       preprocess_volume: all of the above, the write and the QC sidecar
  monai     LoadImage -> Orientation -> Spacing -> ScaleIntensityRange (-> ResizeWithPadOrCrop) -> SaveImage
Then our grid against MONAI's (same lattice: origin and spacing; our shape is MONAI's less the voxels
past the source) with the HU difference on the voxels both hold, anti-aliased and not; and scaling:
preprocess_volume on --scaling-volumes copies with 1 and 2 worker processes.
"""
from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from simcrop.config import PreprocessConfig
from simcrop.data import volume_io
from simcrop.data.preprocessed_io import write_preprocessed
from simcrop.data.preprocess import output_paths, preprocess_volume, to_hu, to_output_grid, validate
from simcrop.data.qc import qc_stats
from simcrop.data.resample import resample

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
STAGES = ("floor", "load", "to_hu", "validate", "grid", "qc", "budget", "write", "e2e", "monai")


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
    volume += rng.integers(-20, 21, size=shape, dtype=np.int16)
    return volume


def make_phantom(folder: Path, shape, spacing) -> Path:
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])      # LPS, like DICOM-derived files
    affine[:3, 3] = [180.0, 180.0, -300.0]
    path = folder / "phantom.nii.gz"
    nib.save(nib.Nifti1Image(phantom(shape, spacing, seed=0), affine), path)
    return path


def make_real_upsampled(folder: Path, source: Path, shape) -> Path:
    """The real CT `source` resampled (linear) to `shape` over the same field of view, + N(0, 15) HU noise."""
    from scipy import ndimage

    image = nib.load(str(source))
    data = np.asanyarray(image.dataobj).astype(np.float32)
    zoom = np.array(shape) / np.array(data.shape)
    big = ndimage.zoom(data, zoom, order=1, output=np.float32)
    big += np.random.default_rng(0).normal(0.0, 15.0, size=big.shape).astype(np.float32)
    affine = image.affine.copy()
    affine[:3, :3] = affine[:3, :3] / zoom
    path = folder / "real_up.nii.gz"
    nib.save(nib.Nifti1Image(np.clip(np.rint(big), -1024, 3071).astype(np.int16), affine), path)
    return path


def monai_chain(spacing, window, size):
    from monai.transforms import (Compose, LoadImage, Orientation, ResizeWithPadOrCrop,
                                  ScaleIntensityRange, Spacing)

    lo, hi = window
    steps = [LoadImage(image_only=True, ensure_channel_first=True), Orientation(axcodes="RAS", labels=None),
             Spacing(pixdim=spacing, mode="bilinear"),
             ScaleIntensityRange(a_min=lo, a_max=hi, b_min=lo, b_max=hi, clip=True)]
    if size is not None:
        steps.append(ResizeWithPadOrCrop(spatial_size=size, mode="constant", constant_values=lo))
    return Compose(steps)


def _floor(path: Path, fmt: str):
    if fmt == "dicom":
        import SimpleITK as sitk

        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path)))
        return sitk.GetArrayFromImage(reader.Execute())
    return np.asanyarray(nib.load(str(path)).dataobj)


def _write(image, affine, out_dir: Path, cfg: PreprocessConfig) -> None:
    """The volume alone, with the writer and format preprocess_volume uses."""
    path = output_paths(out_dir, "write_stage", cfg.format)["image"]
    write_preprocessed(path, image, affine, cfg.compress_level, codec=cfg.cache_codec)


def _clock(times: dict, name: str, fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    times.setdefault(name, []).append(time.perf_counter() - start)
    return result


def measure(path: Path, fmt: str, cfg: PreprocessConfig, repeats: int, out_dir: Path, with_monai: bool) -> dict:
    """Median seconds per stage over `repeats`, plus the geometry/HU comparison with MONAI."""
    times: dict = {}
    row = {"volume_id": "bench", "image": str(path), "format": fmt}
    chain = monai_chain(cfg.spacing, cfg.hu_window, cfg.size) if with_monai else None
    saver = None
    if with_monai:
        from monai.transforms import SaveImage

        saver = SaveImage(output_dir=out_dir / "monai", output_ext=".nii.gz", output_dtype=np.int16,
                          resample=False, separate_folder=False, print_log=False)
    image = out = None
    for _ in range(repeats):
        _clock(times, "floor", _floor, path, fmt)
        volume = _clock(times, "load", volume_io.load_volume, str(path), fmt)
        hu, _ = _clock(times, "to_hu", to_hu, volume.array, row)
        _clock(times, "validate", validate, hu, volume.affine, path, cfg)
        image, out_shape, out_affine = _clock(times, "grid", to_output_grid, hu, volume.affine, cfg)
        _clock(times, "qc", qc_stats, image)
        _clock(times, "write", _write, image, out_affine, out_dir, cfg)
        _clock(times, "e2e", preprocess_volume, row, out_dir, cfg)
        if chain is not None:
            out = _clock(times, "monai", lambda: saver(chain(str(path))))
    result = {name: statistics.median(v) for name, v in times.items()}
    result["budget"] = sum(result[k] for k in ("load", "to_hu", "validate", "grid", "qc"))
    result.update(input_shape=tuple(volume.array.shape), out_shape=tuple(image.shape))
    if out is not None:
        result.update(_against_monai(volume, hu, image, out_affine, out, cfg))
    return result


def _against_monai(volume, hu, image, out_affine, monai_out, cfg) -> dict:
    """Lattice equality, shapes, |ours - MONAI| HU on the voxels both grids hold (ours anti-aliased, and
    ours with anti-aliasing off: MONAI's values)."""
    ref = np.rint(monai_out[0].numpy()).astype(np.float32)
    ref_affine = monai_out.affine.numpy()
    spacing = np.asarray(cfg.spacing, dtype=np.float64)
    offset = (out_affine[:3, 3] - ref_affine[:3, 3]) / spacing
    same_lattice = bool(np.allclose(out_affine[:3, :3], ref_affine[:3, :3], atol=1e-4)
                        and np.allclose(offset, np.rint(offset), atol=1e-3))
    lo, hi = (float(v) for v in cfg.hu_window)
    plain = resample(hu, volume.affine, image.shape, out_affine, fill=lo, anti_alias=False)
    plain = np.rint(np.clip(plain, lo, hi))
    o = np.rint(offset).astype(int)
    ours_box = tuple(slice(max(0, -d), min(n, m - d)) for d, n, m in zip(o, image.shape, ref.shape))
    ref_box = tuple(slice(s.start + d, s.stop + d) for s, d in zip(ours_box, o))
    return {"same_lattice": same_lattice, "monai_shape": tuple(ref.shape),
            "diff_aa": float(np.abs(image[ours_box].astype(np.float32) - ref[ref_box]).mean()),
            "diff_plain_max": float(np.abs(plain[ours_box] - ref[ref_box]).max())}


def _worker_init() -> None:
    torch.set_num_threads(1)


def _one(args) -> float:
    row, out_dir, cfg = args
    return preprocess_volume(row, Path(out_dir), cfg)["seconds"]


def scaling(path: Path, cfg: PreprocessConfig, n: int, out_dir: Path, workers=(1, 2)) -> dict:
    """Volumes per second of preprocess_volume on `n` copies of `path`, with each number of processes."""
    result = {}
    for count in workers:
        rows = [({"volume_id": f"w{count}_{i}", "image": str(path), "format": "nifti"}, str(out_dir), cfg)
                for i in range(n)]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(count, mp_context=context, initializer=_worker_init) as pool:
            list(pool.map(time.sleep, [0.2] * count))          # workers up and imported
            start = time.perf_counter()
            list(pool.map(_one, rows))
            result[count] = n / (time.perf_counter() - start)
    return result


def _table(results: dict) -> str:
    head = ("| input | shape in → out | floor s | load | to_hu | validate | grid | qc | budget s (× floor) "
            "| write | e2e s (× floor) | MONAI s (ours ×faster) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in results.items():
        shape = f"{'x'.join(map(str, r['input_shape']))} → {'x'.join(map(str, r['out_shape']))}"
        monai = f"{r['monai']:.3f} ({r['monai'] / r['e2e']:.1f}×)" if "monai" in r else "n/a"
        lines.append(f"| {name} | {shape} | {r['floor']:.3f} | {r['load']:.3f} | {r['to_hu']:.4f} | "
                     f"{r['validate']:.3f} | {r['grid']:.3f} | {r['qc']:.3f} | {r['budget']:.3f} "
                     f"({r['budget'] / r['floor']:.2f}×) | {r['write']:.3f} | {r['e2e']:.3f} "
                     f"({r['e2e'] / r['floor']:.2f}×) | {monai} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small phantom only, 1 repeat, no scaling")
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300], metavar=("X", "Y", "Z"))
    parser.add_argument("--input-spacing", type=float, nargs=3, default=[0.7, 0.7, 1.0])
    parser.add_argument("--spacing", type=float, nargs=3, default=[1.5, 1.5, 3.0], help="target mm (x y z)")
    parser.add_argument("--size", type=int, nargs=3, default=None, help="centre crop/pad (voxels)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scaling-volumes", type=int, default=4)
    parser.add_argument("--no-monai", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.shape, args.repeats, args.scaling_volumes = [96, 96, 40], 1, 0
    torch.set_num_threads(1)
    cfg = PreprocessConfig(spacing=list(args.spacing), size=args.size)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="simcrop_bench_") as tmp:
        tmp = Path(tmp)
        inputs = {"phantom": (make_phantom(tmp, tuple(args.shape), args.input_spacing), "nifti")}
        real = SHARED / "ct" / "cip_TestInput_chestct_64x64x50.nii.gz"
        if not args.quick and real.exists():
            inputs["real-up"] = (make_real_upsampled(tmp, real, tuple(args.shape)), "nifti")
            for path in sorted((SHARED / "ct").glob("*.nii.gz")):             # the CTs, not their masks
                if not any(word in path.name.lower() for word in ("lung", "labelmap", "mask")):
                    inputs[path.name.split(".")[0]] = (path, "nifti")
            for path in sorted((SHARED / "dicom").iterdir()):
                inputs[path.name + " (DICOM)"] = (path, "dicom")
        warm = next(iter(inputs.values()))
        measure(*warm, cfg, 1, tmp / "warm", with_monai=not args.no_monai)    # imports, first-call costs
        for name, (path, fmt) in inputs.items():
            results[name] = measure(path, fmt, cfg, args.repeats, tmp / "out", with_monai=not args.no_monai
                                    and fmt == "nifti")
        rates = scaling(inputs["phantom"][0], cfg, args.scaling_volumes, tmp / "scale") \
            if args.scaling_volumes else {}
    print(f"target {cfg.spacing} mm, size {cfg.size}, window {cfg.hu_window}, format "
          f"{cfg.format}; median of {args.repeats} per stage (s/volume), 1 thread; "
          f"phantom {tuple(args.shape)} @ {args.input_spacing} mm")
    print(_table(results))
    for name, r in results.items():
        if "same_lattice" in r:
            print(f"{name}: same lattice as MONAI (origin, spacing): {r['same_lattice']}; shape ours "
                  f"{r['out_shape']} vs MONAI {r['monai_shape']}; |ours - MONAI| HU on shared voxels: mean "
                  f"{r['diff_aa']:.2f} (anti-aliasing), without anti-aliasing max {r['diff_plain_max']:.3g}")
    if rates:
        base = rates[1]
        print("scaling, preprocess_volume on the phantom: " + "; ".join(
            f"{k} worker(s) {v:.2f} vol/s ({v / base:.2f}×)" for k, v in rates.items()))
    return {"results": results, "scaling": rates}


if __name__ == "__main__":
    main()
