"""generate_corpus: plan → one job per scan (process pool) → NIfTI files → CSVs and ground truth.

Randomness: the plan uses SeedSequence([seed, 0]); a scan's anatomy, findings and report use
[seed, 1, scan index]; each reconstruction's kernel and noise use [seed, 2, volume index]. Jobs
therefore give identical output whatever the worker count or completion order.
"""
from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from simcrop.data.labels import CTRATE_LABELS
from simcrop.io import atomic_path, write_json_atomic, write_jsonl_atomic
from simcrop.layout import synthetic_marker

from .findings import plant, draw_findings
from .layout import ScanPlan, metadata_row, plan_corpus, volume_path, write_tables
from .phantom import ORGAN_LABELS, build_phantom, draw_anatomy
from .presets import Grid, get_preset, draw_grid
from .reports import write_report
from .shapes import Frame

VERSION = 1


def generate_corpus(root: Path, cfg, progress: bool = True) -> dict:
    """Write the CT-RATE-v2-style corpus under `root` (see docs/data.md) and return a summary.

    cfg: SynthesizeConfig (n_patients, valid_fraction, max_scans, max_reconstructions, preset, seed, workers).
    Returns {"counts": …, "seconds": float, "seconds_per_volume": float, …}.
    """
    t0 = time.perf_counter()
    root = Path(root)
    get_preset(cfg.preset)      # fail before any work on an unknown preset
    scans = plan_corpus(cfg.n_patients, cfg.valid_fraction, cfg.max_scans, cfg.max_reconstructions, cfg.seed)
    n_volumes = sum(len(s.volume_indices) for s in scans)
    results: dict[int, dict] = {}
    bar = tqdm(total=n_volumes, desc=f"synthesize ({cfg.preset})", unit="vol", disable=not progress)
    if cfg.workers <= 1:
        for plan in scans:
            results[plan.index] = make_scan(str(root), cfg.preset, cfg.seed, plan)
            bar.update(len(plan.volume_indices))
    else:
        # spawn, not fork: the caller may hold threads (torch) that a fork would copy mid-lock
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=cfg.workers, mp_context=ctx) as pool:
            jobs = {pool.submit(make_scan, str(root), cfg.preset, cfg.seed, plan): plan for plan in scans}
            for job in as_completed(jobs):
                results[jobs[job].index] = job.result()
                bar.update(len(jobs[job].volume_indices))
    bar.close()
    counts = write_tables(root, scans, results)
    lines = [line for plan in scans for line in results[plan.index]["lesion_lines"]]
    write_jsonl_atomic(root / "synthetic" / "lesions.jsonl", lines)
    n_lesions = sum(len(results[s.index]["lesion_lines"][0]["lesions"]) for s in scans)
    counts.update(patients={sp: len({s.patient for s in scans if s.split == sp}) for sp in ("train", "valid")},
                  scans=len(scans), volumes=n_volumes, lesions_per_scan_total=n_lesions,
                  normal_scans=sum(not results[s.index]["lesion_lines"][0]["lesions"] for s in scans))
    write_json_atomic(synthetic_marker(root), {
        "version": VERSION, "seed": cfg.seed, "preset": cfg.preset, "counts": counts,
        "organ_labels": ORGAN_LABELS, "layout": "CT-RATE v2 (train_fixed/valid_fixed)"})
    seconds = time.perf_counter() - t0
    return {"root": str(root), "preset": cfg.preset, "seed": cfg.seed, "counts": counts,
            "seconds": round(seconds, 2), "seconds_per_volume": round(seconds / n_volumes, 3)}


def make_scan(root: str, preset_name: str, seed: int, plan: ScanPlan) -> dict:
    """Build one scan and write its reconstructions. Returns metadata rows, report, labels, lesion lines."""
    root_path = Path(root)
    preset = get_preset(preset_name)
    rng = np.random.default_rng([seed, 1, plan.index])
    grid, place = draw_grid(preset, rng)
    labels = [] if plan.no_chest else draw_findings(rng)
    z_top = grid.origin[2] + grid.spacing[2] * (grid.shape[2] - 1)
    anatomy = draw_anatomy(rng, place["z_apex"] - grid.origin[2], "abdomen" if plan.no_chest else "chest")
    if plan.no_chest:   # slide the body up so the field of view starts under the heart: an abdomen CT
        place["z_apex"] = z_top + anatomy.H - 20
    if "Cardiomegaly" in labels:
        anatomy.heart_scale = float(rng.uniform(1.22, 1.38))
    frame = Frame(grid, **place)
    ph = build_phantom(anatomy, frame, rng)
    lesion_mask, records = plant(ph, frame, labels, rng)
    report = write_report(records, rng, grid.spacing[2], plan.clinical_given)
    positives = {r["label"] for r in records}
    lesions = [{"id": r["id"], "label": r["label"], "location": r["location"],
                "center_ras_mm": frame.to_ras(r["center"]), "size_mm": r["size_mm"],
                "sentence": r["sentence"], "sentence_span": r["sentence_span"],
                "n_voxels": int((lesion_mask == r["id"]).sum())} for r in records]
    affine = grid.affine()
    first_sharp = bool(rng.random() < 0.5)
    meta, lines = [], []
    for r, (name, vol_index) in enumerate(zip(plan.names, plan.volume_indices)):
        vrng = np.random.default_rng([seed, 2, vol_index])
        sharp = first_sharp ^ bool(r % 2)            # a scan's reconstructions alternate soft/sharp kernels
        image = reconstruct(ph["hu"], sharp, preset.noise_scale, vrng)
        _save(root_path / volume_path(name), grid.to_file_order(image), affine)
        _save(root_path / "synthetic" / "lesion_masks" / f"{name}.nii.gz", grid.to_file_order(lesion_mask), affine)
        _save(root_path / "synthetic" / "organs" / f"{name}.nii.gz", grid.to_file_order(ph["organs"]), affine)
        meta.append(metadata_row(name, grid, plan, r, sharp, vrng))
        lines.append({"volume_id": name, "lesion_mask": f"synthetic/lesion_masks/{name}.nii.gz",
                      "organ_mask": f"synthetic/organs/{name}.nii.gz", "orientation": grid.orientation,
                      "kind": "abdomen" if plan.no_chest else "chest", "lesions": lesions})
    return {"metadata": meta, "report": report, "lesion_lines": lines,
            "labels": {name: int(name in positives) for name in CTRATE_LABELS}}


def reconstruct(hu: np.ndarray, sharp: bool, noise_scale: float, rng: np.random.Generator) -> np.ndarray:
    """Noise-free HU (X, Y, Z) float32 → int16 HU image of one reconstruction kernel.

    Soft kernels blur more and are quieter; sharp kernels keep edges and are noisier (as B30f vs B70f).
    """
    s = rng.uniform(0.35, 0.55) if sharp else rng.uniform(0.75, 1.05)
    image = ndimage.gaussian_filter(hu, (s, s, 0.6 * s))
    noise = ndimage.gaussian_filter(rng.standard_normal(hu.shape, dtype=np.float32), 0.6)
    noise *= (rng.uniform(40, 65) if sharp else rng.uniform(12, 22)) * noise_scale / (noise.std() + 1e-6)
    image += noise
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16)


def _save(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


__all__ = ["generate_corpus", "make_scan", "reconstruct", "Grid"]
