"""Builders for the input-door reliability tests: DICOM series written with SimpleITK (real files, read
back by GDCM like a user's export), copies of the real series, and a chest phantom in HU."""
from __future__ import annotations

import contextlib
import locale
import shutil
import stat
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REAL_SERIES = "lungpetctdx_A0002_B40f"
STUDY_UID = "1.2.826.0.1.3680043.8.498.1"


def copy_real_series(shared_data: Path, dest: Path) -> Path:
    """A writable copy of the real 30-slice DICOM series (files 1-01.dcm … 1-30.dcm, 8 mm apart)."""
    shutil.copytree(shared_data / "dicom" / REAL_SERIES, dest)
    for path in [dest, *dest.iterdir()]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return dest


def chest_hu(n_slices: int = 10, size: int = 48, seed: int = 0) -> np.ndarray:
    """(Z, Y, X) int16 HU: air around an oval body of soft tissue holding two lungs and a spine."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] / size - 0.5
    plane = np.full((size, size), -1000.0)
    plane[(x / 0.45) ** 2 + (y / 0.35) ** 2 < 1] = 40
    for side in (-0.2, 0.2):
        plane[((x - side) / 0.14) ** 2 + (y / 0.22) ** 2 < 1] = -850
    plane[(x ** 2 + (y - 0.25) ** 2) < 0.05 ** 2] = 700
    hu = np.repeat(plane[None], n_slices, axis=0) + rng.normal(0, 15, (n_slices, size, size))
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def write_dicom_series(folder: Path, hu: np.ndarray, positions, uid: str, *, description: str = "Thorax 2.0",
                       body_part: str = "CHEST", image_type: str = "ORIGINAL\\PRIMARY\\AXIAL",
                       modality: str = "CT", prefix: str = "im", spacing=(0.8, 0.8)) -> list[Path]:
    """One DICOM file per slice of `hu (Z, Y, X)` int16 HU at the given z `positions` (mm, LPS),
    axial orientation; returns the files. Slices are written with SimpleITK/GDCM (int16, slope 1)."""
    with keep_locale():
        return _write_series(folder, hu, positions, uid, description, body_part, image_type, modality, prefix,
                             spacing)


@contextlib.contextmanager
def keep_locale():
    """GDCM's DICOM writer switches the process locale to "C" and leaves it there; every later
    `open()` without an encoding in this pytest process (torch inductor's templates, ...) would then
    read ASCII. Put it back."""
    before = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, before)


def _write_series(folder, hu, positions, uid, description, body_part, image_type, modality, prefix,
                  spacing) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for i, (plane, z) in enumerate(zip(hu, positions)):
        image = sitk.GetImageFromArray(plane.astype(np.int16)[None])
        image.SetSpacing((float(spacing[0]), float(spacing[1]), 1.0))
        tags = {"0008|0060": modality, "0008|0008": image_type, "0008|103e": description,
                "0018|0015": body_part, "0010|0020": "P1", "0020|000d": STUDY_UID, "0020|000e": uid,
                "0008|0018": f"{uid}.{i + 1}", "0020|0013": str(i + 1),
                "0020|0032": f"-100\\-100\\{float(z)}", "0020|0037": "1\\0\\0\\0\\1\\0"}
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        files.append(folder / f"{prefix}{i:03d}.dcm")
        writer.SetFileName(str(files[-1]))
        writer.Execute(image)
    return files
