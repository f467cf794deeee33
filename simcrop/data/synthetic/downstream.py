"""Small downstream sets in the RadChestCT, CC-CCII, LUNA16 and BTCV formats, built from the phantom.

`write_downstream_samples(root, seed)` writes `root/{radchestct,ccccii,luna16,btcv}/`, each in the on-disk
convention its adapter documents (simcrop/data/adapters/<name>.py), so every adapter runs end to end in
the demo and in tests. Tiny grids (40² × ~25 voxels at ~9 × 12 mm): format fidelity, not image realism.

What each case carries:
- RadChestCT: `ct` int16 HU (Z, Y, X) in LPS order plus an `affine` key (the tiny grid is not 0.8 mm);
  labels drawn from the seed over every mapped abnormality at two locations, plus an unmapped column.
  The images carry no planted findings: the labels exercise the label path only.
- CC-CCII: two scans per class: HU NIfTI volumes, one slice-first 0–255 NIfTI whose header gives only
  zooms (the troublesome case), one slice-first 0–255 `.npy` stack and one folder of 0–255 PNG slices
  (these two have no spacing: the adapter's assumed default applies).
- LUNA16: `.mhd` + `.raw` (SimpleITK) in subset0/subset1/subset9, a nodule (sphere of soft tissue in a lung)
  in every other scan listed in `annotations.csv` (world mm, ITK/LPS), and seg-lungs masks from the phantom
  organ map with the public values (3 left lung, 4 right lung, 5 trachea).
- BTCV: abdomen phantoms (the corpus' no-chest body placement) as NIfTI with a BTCV label map. The phantom
  has only liver, kidneys, stomach and aorta of the 13 organs: those get their BTCV values (kidneys split by
  side); the other nine are absent. `dataset.json` lists 2/3 of the cases under `training`, 1/3 `validation`.
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from simcrop.data.downstream_labels import BTCV_ORGANS, RADCHESTCT_ABNORMALITIES
from simcrop.io import atomic_path, write_json_atomic

from .phantom import AORTA, KIDNEY, LIVER, ORGAN_LABELS, STOMACH, build_phantom, draw_anatomy
from .presets import Preset, draw_grid
from .shapes import Frame

TINY = Preset(matrix=40, slices=(24, 28), xy_spacing_mm=(8.5, 9.5), z_spacing_mm=(11.0, 13.0), noise_scale=0.3)
LOCATIONS = ("left_lung", "right_lung")
WINDOW = (-1350.0, 150.0)                  # lung window used to render the 0–255 CC-CCII cases


def phantom_case(seed: int, index: int, kind: str = "chest") -> dict:
    """One tiny phantom: {"hu": (X, Y, Z) int16 in canonical RAS order, "organs", "tissue", "grid", "frame"}."""
    rng = np.random.default_rng([seed, 7, index])
    grid, place = draw_grid(TINY, rng)
    anatomy = draw_anatomy(rng, place["z_apex"] - grid.origin[2], kind)
    if kind == "abdomen":                   # as the corpus' no-chest cases: field of view under the heart
        place["z_apex"] = grid.origin[2] + grid.spacing[2] * (grid.shape[2] - 1) + anatomy.H - 20
    frame = Frame(grid, **place)
    ph = build_phantom(anatomy, frame, rng)
    noise = rng.normal(0.0, 12.0, ph["hu"].shape).astype(np.float32)
    hu = np.clip(np.rint(ph["hu"] + noise), -1024, 3071).astype(np.int16)
    return {"hu": hu, "organs": ph["organs"], "tissue": ph["tissue"], "grid": grid, "frame": frame, "rng": rng}


def ras_affine(grid) -> np.ndarray:
    """Affine of the canonical RAS-ordered array (X, Y, Z)."""
    affine = np.diag([*grid.spacing, 1.0])
    affine[:3, 3] = grid.origin
    return affine


def lps_affine(grid) -> np.ndarray:
    """RAS affine of the array in LPS voxel order (axes 0 and 1 reversed), as `to_lps_stack` stores it."""
    sx, sy, sz = grid.spacing
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[:3, 3] = (grid.origin[0] + sx * (grid.shape[0] - 1), grid.origin[1] + sy * (grid.shape[1] - 1),
                     grid.origin[2])
    return affine


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(image, tmp)


def to_lps_stack(array: np.ndarray) -> np.ndarray:
    """Canonical RAS (X, Y, Z) → DICOM-like (Z, Y, X) stack with columns → left, rows → posterior."""
    return np.ascontiguousarray(array[::-1, ::-1, :].transpose(2, 1, 0))


def to_uint8(hu: np.ndarray, window=WINDOW) -> np.ndarray:
    lo, hi = window
    return np.rint(np.clip((hu.astype(np.float32) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def write_radchestct(root: Path, seed: int, n_cases: int) -> None:
    splits = ["trn", "val", "tst"]
    tables: dict[str, list[dict]] = {s: [] for s in splits}
    rng = np.random.default_rng([seed, 8])
    for i in range(n_cases):
        case = phantom_case(seed, 100 + i)
        prefix = splits[i % 3]
        key = f"{prefix}{i + 1:05d}"
        # LPS order (DICOM axes) as the adapter documents; the true geometry goes in the affine key.
        with atomic_path(root / "volumes" / f"{key}.npz") as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, ct=to_lps_stack(case["hu"]), affine=lps_affine(case["grid"]))
        row = {"NoteAcc_DEID": key}
        row.update({f"{name}*{location}": 0 for names in RADCHESTCT_ABNORMALITIES.values()
                    for name in names for location in LOCATIONS})
        for names in RADCHESTCT_ABNORMALITIES.values():      # a positive label: one of its columns set
            if rng.random() < 0.3:
                row[f"{names[rng.integers(len(names))]}*{LOCATIONS[rng.integers(2)]}"] = 1
        row["pneumothorax*left_lung"] = int(rng.random() < 0.2)       # unmapped: must be ignored
        tables[prefix].append(row)
    for prefix, name in zip(splits, ("train", "valid", "test")):
        frame = pd.DataFrame(tables[prefix])
        with atomic_path(root / f"img{name}_Abnormality_and_Location_Labels.csv") as tmp:
            frame.to_csv(tmp, index=False)


def write_ccccii(root: Path, seed: int, n_cases: int) -> None:
    import SimpleITK as sitk

    classes = ["Normal", "NCP", "CP"]
    for i in range(n_cases):
        case = phantom_case(seed, 200 + i)
        folder = root / classes[i % 3] / f"{i + 1:04d}"
        kind = i % 6
        if kind == 1:                    # slice-first 0–255 NIfTI, header zooms (z, y, x), no orientation
            sx, sy, sz = case["grid"].spacing
            save_nifti(folder / f"{3000 + i}.nii.gz", to_lps_stack(to_uint8(case["hu"])), np.diag([sz, sy, sx, 1.0]))
        elif kind == 3:                  # slice-first 0–255 numpy stack
            with atomic_path(folder / f"{3000 + i}.npy") as tmp, open(tmp, "wb") as handle:
                np.save(handle, to_lps_stack(to_uint8(case["hu"])))
        elif kind == 5:                  # folder of PNG slices (the public release's layout)
            scan = folder / f"{3000 + i}"
            scan.mkdir(parents=True, exist_ok=True)
            for z, plane in enumerate(to_lps_stack(to_uint8(case["hu"]))):
                sitk.WriteImage(sitk.GetImageFromArray(plane), str(scan / f"{z}.png"))
        else:                            # HU NIfTI with a proper affine
            save_nifti(folder / f"{3000 + i}.nii.gz", case["hu"], ras_affine(case["grid"]))


def _itk_image(array_ras: np.ndarray, grid):
    """Canonical RAS (X, Y, Z) array → SimpleITK image in LPS voxel order with LPS geometry."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(to_lps_stack(array_ras))
    image.SetSpacing(tuple(float(s) for s in grid.spacing))
    ras_origin = lps_affine(grid)[:3, 3]
    image.SetOrigin((-ras_origin[0], -ras_origin[1], ras_origin[2]))   # LPS of the first stored voxel
    return image


def write_luna16(root: Path, seed: int, n_cases: int) -> None:
    import SimpleITK as sitk

    subsets = ["subset0", "subset1", "subset9"]
    annotations = []
    luna_values = {ORGAN_LABELS["left_lung"]: 3, ORGAN_LABELS["right_lung"]: 4, ORGAN_LABELS["airway"]: 5}
    for i in range(n_cases):
        case = phantom_case(seed, 300 + i)
        uid = f"1.3.6.1.4.1.14519.5.2.1.6279.6001.{seed}{400000 + i}"
        hu, grid = case["hu"].copy(), case["grid"]
        if i % 2 == 0:
            lung = np.argwhere(np.isin(case["organs"], [ORGAN_LABELS["left_lung"], ORGAN_LABELS["right_lung"]]))
            centre = lung[case["rng"].integers(len(lung))]
            ijk = np.indices(hu.shape).reshape(3, -1).T
            mm = (ijk - centre) * np.asarray(grid.spacing)
            hu.reshape(-1)[(mm ** 2).sum(axis=1) <= 10.0 ** 2] = 40
            ras = grid.voxel_to_ras(centre)
            annotations.append({"seriesuid": uid, "coordX": -ras[0], "coordY": -ras[1], "coordZ": ras[2],
                                "diameter_mm": 20.0})
        folder = root / subsets[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(_itk_image(hu, grid), str(folder / f"{uid}.mhd"))
        mask = np.zeros_like(case["organs"])
        for organ, value in luna_values.items():
            mask[case["organs"] == organ] = value
        (root / "seg-lungs-LUNA16").mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(_itk_image(mask, grid), str(root / "seg-lungs-LUNA16" / f"{uid}.mhd"))
    frame = pd.DataFrame(annotations, columns=["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"])
    with atomic_path(root / "annotations.csv") as tmp:
        frame.to_csv(tmp, index=False)


def write_btcv(root: Path, seed: int, n_cases: int) -> None:
    training, validation = [], []
    for i in range(n_cases):
        case = phantom_case(seed, 400 + i, kind="abdomen")
        tissue, frame = case["tissue"], case["frame"]
        label = np.zeros(tissue.shape, np.uint8)
        right = (frame.u > 0)[:, None, None]
        label[tissue == LIVER] = BTCV_ORGANS["liver"]
        label[(tissue == KIDNEY) & right] = BTCV_ORGANS["right_kidney"]
        label[(tissue == KIDNEY) & ~right] = BTCV_ORGANS["left_kidney"]
        label[tissue == STOMACH] = BTCV_ORGANS["stomach"]
        label[tissue == AORTA] = BTCV_ORGANS["aorta"]
        name = f"{i + 1:04d}"
        entry = {"image": f"imagesTr/img{name}.nii.gz", "label": f"labelsTr/label{name}.nii.gz"}
        save_nifti(root / entry["image"], case["hu"], ras_affine(case["grid"]))
        save_nifti(root / entry["label"], label, ras_affine(case["grid"]))
        (validation if i % 3 == 2 else training).append(entry)
    write_json_atomic(root / "dataset.json", {
        "name": "BTCV (synthetic)", "modality": {"0": "CT"},
        "labels": {"0": "background", **{str(v): k for k, v in BTCV_ORGANS.items()}},
        "numTraining": len(training), "training": training, "validation": validation})


def write_downstream_samples(root: str | Path, seed: int, n_cases: int = 6) -> dict:
    """Write the four small downstream sets under `root`; returns {dataset: its root (str)}."""
    root = Path(root)
    if n_cases < 3:
        raise ValueError(f"n_cases must be >= 3 (one per split or class), got {n_cases}")
    writers = {"radchestct": write_radchestct, "ccccii": write_ccccii, "luna16": write_luna16, "btcv": write_btcv}
    out = {}
    for name, writer in writers.items():
        writer(root / name, seed, n_cases)
        out[name] = str(root / name)
    return out
