"""pretrain.diagnostics logs where the real SimCroP's top-K picks land, and changes no weight."""
from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np

from pretrain_runs import assert_bitwise, config, weights
from simcrop.model.factory import build_pretrain_model
from simcrop.train.pretrain import pretrain
from simcrop.train.provenance import changed_settings
from train_helpers import write_run

DIAGNOSTICS = ("lesion_hit_share", "lesion_hit_fraction", "picks_air", "picks_body", "picks_lung",
               "distinct_picks")


def run_with_maps(root):
    """A tiny run whose first sentence of every report names lesion 1, with lesion and organ maps."""
    paths = write_run(root, n=4)
    masks = root / "preprocessed" / "masks"
    masks.mkdir(parents=True)
    for volume in sorted((root / "preprocessed" / "volumes").glob("*.nii.gz")):
        image = nib.load(volume)
        organ = np.zeros(image.shape, np.uint8)
        organ[:20, 5:35, 2:18] = 1                                   # right lung
        organ[20:, 5:35, 2:18] = 2                                   # left lung
        lesion = np.zeros(image.shape, np.uint8)
        lesion[8:20, 10:22, 6:14] = 1
        vid = volume.name.removesuffix(".nii.gz")
        nib.save(nib.Nifti1Image(organ, image.affine), masks / f"{vid}.organ.nii.gz")
        nib.save(nib.Nifti1Image(lesion, image.affine), masks / f"{vid}.lesion.nii.gz")
    records = [json.loads(line) for line in paths["sentences"].read_text().splitlines()]
    for record in records:
        record["sentences"][0]["lesion_ids"] = [1]
    paths["sentences"].write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def test_diagnostics_are_logged_and_change_no_weight(tmp_path, text_encoder):
    run_dir = run_with_maps(tmp_path / "data" / "run")

    def train(out, diagnostics):
        cfg = config(run_dir, diagnostics=diagnostics, log_every=2, steps=4)
        return pretrain(cfg, run_dir, out, lambda m: build_pretrain_model(m, text_encoder=text_encoder),
                        progress=False, device="cpu")

    train(tmp_path / "plain", False)
    train(tmp_path / "diag", True)
    assert_bitwise(weights(tmp_path / "diag"), weights(tmp_path / "plain"))
    folder = tmp_path / "diag" / "dvclive" / "plots" / "metrics" / "diag"
    for name in DIAGNOSTICS:
        rows = list(csv.DictReader(open(folder / f"{name}.tsv"), delimiter="\t"))
        assert [int(r["step"]) for r in rows] == [2, 4], name
        assert all(0.0 <= float(r[name]) <= 1.0 for r in rows), name
    shares = [float(next(csv.DictReader(open(folder / f"picks_{c}.tsv"), delimiter="\t"))[f"picks_{c}"])
              for c in ("air", "body", "lung")]
    assert abs(sum(shares) - 1.0) < 1e-6
    assert not (tmp_path / "plain" / "dvclive" / "plots" / "metrics" / "diag").exists()
    # switching diagnostics on is not a new training: the finished run is not discarded
    assert changed_settings({"pretrain": {"diagnostics": False}}, {"pretrain": {"diagnostics": True}}) == []
