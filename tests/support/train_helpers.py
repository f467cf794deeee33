"""Tiny preprocessed runs, a tiny MAE adapter with the pre-training model interface, and a DDP entry."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch import nn

from simcrop.config import from_dict
from simcrop.data.manifest import empty_row, write_manifest
from simcrop.model.mae import build_mae
from simcrop.model.vit3d import build_vit

TINY_VIT = {"embed_dim": 48, "depth": 2, "num_heads": 3}
BUILT: list[nn.Module] = []          # models built by tiny_model_factory in this process, newest last


def write_run(root: Path, n: int = 6, shape=(40, 40, 20), small: dict | None = None,
              no_findings=(), not_qc=(), val: int = 1, seed: int = 0) -> dict:
    """A run dir as preprocess + sentences leave it: manifest.csv, qc.csv, sentences.jsonl, volumes/.

    Volumes vol{i} (i < n) are train, then `val` val volumes. small: {i: shape} overrides a shape.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "preprocessed" / "volumes").mkdir(parents=True, exist_ok=True)
    rows, qc, lines = [], [], []
    for i in range(n + val):
        vid = f"vol{i}"
        split = "train" if i < n else "val"
        findings = "" if i in no_findings else f"Nodule {i} in the right lung. Heart normal size."
        row = empty_row()
        row.update(volume_id=vid, patient_id=f"p{i}", scan_id=f"p{i}_a", split=split, image=f"/raw/{vid}.nii.gz",
                   format="nifti", source="synthetic", findings=findings, impressions=f"Impression {i}.")
        rows.append(row)
        dims = (small or {}).get(i, shape)
        grid = np.stack(np.meshgrid(*[np.linspace(0, 1, d) for d in dims], indexing="ij"))
        hu = 600 * np.sin(3 * grid[0] + i) * np.cos(2 * grid[1]) + 200 * grid[2] + rng.normal(0, 30, dims)
        img = nib.Nifti1Image(np.clip(hu, -1000, 1000).astype(np.int16), np.diag([3.0, 3.0, 6.0, 1.0]))
        nib.save(img, root / "preprocessed" / "volumes" / f"{vid}.nii.gz")
        if i not in not_qc:
            qc.append(vid)
        sentences = [] if i in no_findings else [
            {"section": "findings", "text": f"Nodule {i} in the right lung.", "start": 0, "end": 27,
             "lesion_ids": []},
            {"section": "findings", "text": "Heart normal size.", "start": 28, "end": 46, "lesion_ids": []}]
        sentences.append({"section": "impressions", "text": f"Impression {i}.", "start": 0, "end": 13,
                          "lesion_ids": []})
        lines.append(json.dumps({"volume_id": vid, "scan_id": f"p{i}_a", "split": split, "sentences": sentences}))
    write_manifest(root / "manifest.csv", rows)
    (root / "qc.csv").write_text("volume_id,output\n" + "".join(f"{v},x\n" for v in qc))
    (root / "sentences.jsonl").write_text("\n".join(lines) + "\n")
    return {"run_dir": root, "manifest": root / "manifest.csv", "qc": root / "qc.csv",
            "sentences": root / "sentences.jsonl", "preprocessed": root / "preprocessed"}


class TinyMAE(nn.Module):
    """The pre-training model interface around MaskedAutoencoder3D: forward(batch) -> loss, losses."""

    def __init__(self, img_size=(32, 32, 16), patch_size=(16, 16, 8), vit=None):
        super().__init__()
        encoder = build_vit(vit or TINY_VIT, img_size=tuple(img_size), patch_size=tuple(patch_size))
        self.mae = build_mae(encoder, decoder_dim=48, decoder_depth=1, decoder_heads=3, mask_ratio=0.5)
        self.stop_at_call: int | None = None      # send SIGTERM to this process on that forward call
        self.calls = 0

    @property
    def encoder(self):
        return self.mae.encoder

    def forward(self, batch: dict) -> dict:
        self.calls += 1
        if self.stop_at_call == self.calls:
            import signal
            os.kill(os.getpid(), signal.SIGTERM)
        out = self.mae(batch["image"])
        return {"loss": out["loss"], "losses": {"image": out["loss"]}}


def tiny_model_factory(model_cfg) -> TinyMAE:
    model = TinyMAE(model_cfg.img_size, model_cfg.patch_size)
    BUILT.append(model)
    return model


def stack_collate(samples: list[dict]) -> dict:
    return {"image": torch.stack([s["image"] for s in samples]), "volume_id": [s["volume_id"] for s in samples]}


def stack_collate_factory(model_cfg):
    return stack_collate


def tiny_config(tmp: Path, **pretrain) -> object:
    values = {"run": "t", "results_dir": str(tmp / "results"),
              "model": {"img_size": [32, 32, 16], "patch_size": [16, 16, 8]},
              "pretrain": {"steps": 8, "batch_size": 2, "warmup_steps": 2, "log_every": 2,
                           "checkpoint_every": 100, "num_workers": 0, "lr": 1e-3, "min_lr": 1e-5, **pretrain}}
    return from_dict(values)


def ddp_entry(rank: int, world_size: int, port: int, tmp: str, pretrain_overrides: dict) -> None:
    """One rank of a CPU/gloo DDP run (torch.multiprocessing.spawn); saves its final weights."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from simcrop.train.pretrain import pretrain

    tmp = Path(tmp)
    cfg = tiny_config(tmp, **pretrain_overrides)
    pretrain(cfg, tmp / "run", tmp / "out", tiny_model_factory, stack_collate_factory, progress=False,
             device="cpu")
    torch.save(BUILT[-1].state_dict(), tmp / f"rank{rank}.pt")
