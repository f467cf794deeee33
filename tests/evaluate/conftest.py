"""A tiny preprocessed run with planted lesions and labels, and tiny checkpoints of each objective.

Run layout (what ingest, preprocess and sentences leave): manifest.csv, qc.csv, sentences.jsonl,
preprocessed/volumes/<id>.nii.gz, preprocessed/masks/<id>.lesion.nii.gz. Test split: scan t0_a with two
reconstructions (t0_a_1, t0_a_2) and scans t1_a, t2_a; one train volume. Volumes are 36 x 36 x 18 so the
model's 32 x 32 x 16 centre crop cuts 2 x 2 x 1 voxels from each side.

Also the results reports of hand-written runs of evaluation JSON files (builders in
tests/support/report_runs.py), shared by test_report.py and test_results_*.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from simcrop.config import from_dict
from simcrop.data.manifest import empty_row, write_manifest
from simcrop.evaluate.report import write_report
from simcrop.model.factory import build_pretrain_model
from simcrop.train.checkpoint import save_checkpoint

from report_runs import build_controls_run, build_probe_ci_run, build_results_run

SHAPE = (36, 36, 18)
VOLUMES = [  # volume_id, scan_id, split, lesion box (x0, x1, y0, y1, z0, z1) or None, labels
    ("t0_a_1", "t0_a", "test", (6, 14, 6, 14, 4, 10), {"Lung nodule": 1, "Emphysema": 0, "Cardiomegaly": 0}),
    ("t0_a_2", "t0_a", "test", (6, 14, 6, 14, 4, 10), {"Lung nodule": 1, "Emphysema": 0, "Cardiomegaly": 0}),
    ("t1_a_1", "t1_a", "test", (20, 30, 18, 28, 8, 14), {"Lung nodule": 0, "Emphysema": 1, "Cardiomegaly": 0}),
    ("t2_a_1", "t2_a", "test", None, {"Lung nodule": 0, "Emphysema": 0, "Cardiomegaly": 0}),
    ("r0_a_1", "r0_a", "train", None, {"Lung nodule": 0, "Emphysema": 0, "Cardiomegaly": 0}),
]
LESION_SENTENCE = {"t0_a": "A 20 mm nodule is seen in the right upper lobe.",
                   "t1_a": "Emphysema in the left lower lobe."}
NORMAL = ["The heart is normal in size.", "No pleural effusion."]
TINY_MODEL = dict(vit="vit_demo", img_size=[32, 32, 16], patch_size=[8, 8, 4], decoder_dim=48, decoder_depth=1,
                  decoder_heads=3, text_max_tokens=64, proj_dim=32, topk=4, text_decoder_layers=1,
                  loss_weights={"image": 1.0, "align": 1.0, "report": 0.0})


def _report(scan_id: str) -> tuple[str, list[dict]]:
    texts = ([LESION_SENTENCE[scan_id]] if scan_id in LESION_SENTENCE else []) + NORMAL
    findings, records = "", []
    for text in texts:
        start = len(findings) + (1 if findings else 0)
        findings = f"{findings} {text}" if findings else text
        records.append({"section": "findings", "text": text, "start": start, "end": len(findings),
                        "lesion_ids": [1] if text in LESION_SENTENCE.values() else []})
    return findings, records


def write_tiny_run(root: Path, masks: bool = True) -> Path:
    rng = np.random.default_rng(0)
    (root / "preprocessed" / "volumes").mkdir(parents=True)
    (root / "preprocessed" / "masks").mkdir(parents=True)
    rows, lines = [], []
    affine = np.diag([3.0, 3.0, 6.0, 1.0])
    for vid, scan, split, box, labels in VOLUMES:
        findings, records = _report(scan)
        row = empty_row()
        row.update(volume_id=vid, patient_id=scan.split("_")[0], scan_id=scan, split=split, format="nifti",
                   image=f"/raw/{vid}.nii.gz", source="synthetic", findings=findings, impressions="Impression.",
                   labels=json.dumps(labels))
        rows.append(row)
        hu = rng.normal(-700, 60, SHAPE)
        mask = np.zeros(SHAPE, dtype=np.uint8)
        if box is not None:
            x0, x1, y0, y1, z0, z1 = box
            mask[x0:x1, y0:y1, z0:z1] = 1
            hu[mask > 0] = 40
        nib.save(nib.Nifti1Image(np.clip(hu, -1000, 1000).astype(np.int16), affine),
                 root / "preprocessed" / "volumes" / f"{vid}.nii.gz")
        if masks:
            nib.save(nib.Nifti1Image(mask, affine), root / "preprocessed" / "masks" / f"{vid}.lesion.nii.gz")
        lines.append(json.dumps({"volume_id": vid, "scan_id": scan, "split": split, "sentences": records}))
    write_manifest(root / "manifest.csv", rows)
    (root / "qc.csv").write_text("volume_id,output\n" + "".join(f"{v[0]},x\n" for v in VOLUMES))
    (root / "sentences.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_run_factory():
    """write_tiny_run(root, masks=True) for tests that need their own variant of the run."""
    return write_tiny_run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    return write_tiny_run(tmp_path_factory.mktemp("run"))


def make_checkpoint(path: Path, text_encoder, objective: str = "simcrop", seed: int = 0) -> Path:
    config = from_dict({"model": dict(TINY_MODEL, objective=objective)}).to_dict()
    torch.manual_seed(seed)
    model = build_pretrain_model(from_dict(config).model, text_encoder=text_encoder)
    return save_checkpoint(path, model, config_dict=config)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, text_encoder) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    return {objective: make_checkpoint(root / objective / "last.pt", text_encoder, objective)
            for objective in ("simcrop", "clip", "mae")}


@pytest.fixture(scope="session")
def results_run(tmp_path_factory) -> Path:
    return build_results_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="session")
def results_report(results_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, write_report(results_run, out, n_heatmaps=3, title="Test run")


@pytest.fixture(scope="session")
def controls_report(tmp_path_factory):
    run = build_controls_run(tmp_path_factory.mktemp("controls_run"))
    out = tmp_path_factory.mktemp("controls_report")
    return out, write_report(run, out, n_heatmaps=0)


@pytest.fixture(scope="session")
def probe_ci_report(tmp_path_factory):
    run, tests = build_probe_ci_run(tmp_path_factory.mktemp("probe_ci_run"))
    out = tmp_path_factory.mktemp("probe_ci_report")
    return out, write_report(run, out, n_heatmaps=0), tests
