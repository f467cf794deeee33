"""A real Snakemake run of the data half on a few synthetic volumes."""
import json
import sys

import nibabel as nib
import pandas as pd
import pytest
import torch
import yaml

from simcrop import layout
from simcrop.data.manifest import read_manifest

pytestmark = pytest.mark.slow


def snakemake(repo_root, workdir, config_file, *extra):
    return [sys.executable, "-m", "snakemake", "--snakefile", str(repo_root / "workflow" / "Snakefile"),
            "--directory", str(workdir), "--configfile", str(config_file), "--cores", "2", *extra]


def test_data_half_end_to_end(repo_root, tmp_path, tiny_config_file, tiny_config, run_tool):
    work = tmp_path / "work"
    work.mkdir()
    run_tool(snakemake(repo_root, work, tiny_config_file), repo_root)
    run = layout.Run(work / "results" / "tiny")

    manifest = read_manifest(run.manifest)
    qc = pd.read_csv(run.qc)
    quarantine = pd.read_csv(run.quarantine)
    assert len(manifest) >= 4
    assert set(qc.volume_id) | set(quarantine.volume_id) == set(manifest.volume_id)
    assert len(run.preprocessed.shard_qc_files()) == -(-len(manifest) // 3)

    # Outputs are int16 RAS at the configured spacing, in the training cache (preprocess.format: b2nd).
    from simcrop.data.preprocessed_io import open_preprocessed

    volume = open_preprocessed(run.preprocessed.volume(qc.volume_id.iloc[0]))
    assert volume.format == "b2nd" and volume.dtype == "int16"
    assert nib.aff2axcodes(volume.affine) == ("R", "A", "S")
    assert tuple(volume.spacing) == pytest.approx((6.0, 6.0, 10.0))

    lines = [json.loads(line) for line in run.sentences.read_text().splitlines()]
    assert {row["volume_id"] for row in lines} <= set(manifest.volume_id)
    assert any(s["lesion_ids"] for row in lines for s in row["sentences"])
    assert run.montage.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((run.logs / "preprocess").glob("*.log")), "per-job logs missing"
    downstream = work / "data" / "synthetic" / "downstream"
    assert {p.name for p in downstream.iterdir()} >= {"radchestct", "ccccii", "luna16", "btcv"}

    metrics = json.loads(run.pretrain_metrics("simcrop").read_text())
    assert metrics["step"] == 3 and set(metrics["losses"]) >= {"image", "align", "report"}
    exported = torch.load(run.encoder("simcrop"), weights_only=True)["model"]
    assert "patch_embed.proj.weight" in exported and "blocks.0.attn.qkv.weight" in exported

    # The experiment: every (objective x dataset x fraction) file, then the results table.
    for objective in ("random", "simcrop"):
        for task, dataset, pct in (("probe", "main", "50"), ("probe", "main", "100"), ("probe", "ccccii", "100"),
                                   ("segment", "luna16", "100")):
            assert run.evaluation(objective, task, dataset, pct).exists(), (objective, task, dataset, pct)
    multiclass = json.loads(run.evaluation("simcrop", "probe", "ccccii", "100").read_text())
    assert multiclass["task"] == "multiclass" and 0.0 <= multiclass["fractions"]["100"]["test"]["accuracy"] <= 1.0
    lungs = json.loads(run.evaluation("random", "segment", "luna16", "100").read_text())
    assert lungs["classes"] == ["left_lung", "right_lung", "trachea"] and lungs["encoder"] == "random"
    assert json.loads(run.evaluation("simcrop", "grounding").read_text())["n_sentences"] > 0
    results = json.loads((run.report / "results.json").read_text())
    assert results["objectives"] == ["random", "simcrop"]
    assert "probe ccccii acc 100%" in results["columns"] and "grounding hit" in results["columns"]
    assert results["rows"]["random"]["grounding hit"] is None          # no text side: not in the row
    table = (run.report / "results.md").read_text()
    assert "| simcrop |" in table and "segment luna16 Dice 100%" in table
    assert (run.report / "figures" / "fraction_curves.png").read_bytes()[:4] == b"\x89PNG"

    # Nothing changed: a second run has nothing to do.
    again = run_tool(snakemake(repo_root, work, tiny_config_file, "-n"), repo_root)
    assert "Nothing to be done" in again.stdout + again.stderr

    # Pre-training reruns are never stuck and never keep weights trained with other settings.
    out = run.pretrain_dir("simcrop")
    encoder = run.encoder("simcrop").read_bytes()
    logging_only = tmp_path / "logging_only.yaml"          # Snakemake reruns the job: its params changed
    logging_only.write_text(yaml.safe_dump({**tiny_config, "pretrain": {**tiny_config["pretrain"], "log_every": 3}}))
    run_tool(snakemake(repo_root, work, logging_only, "pretrained"), repo_root)
    assert run.encoder("simcrop").read_bytes() == encoder and run.pretrain_metrics("simcrop").exists()
    run.encoder("simcrop").unlink()                        # as after an interrupted Snakemake
    run.pretrain_metrics("simcrop").unlink()
    run_tool(snakemake(repo_root, work, logging_only, "pretrained", "--rerun-incomplete"), repo_root)
    assert run.encoder("simcrop").read_bytes() == encoder
    new_lr = tmp_path / "new_lr.yaml"
    new_lr.write_text(yaml.safe_dump({**tiny_config, "pretrain": {**tiny_config["pretrain"], "lr": 1e-3}}))
    run_tool(snakemake(repo_root, work, new_lr, "pretrained"), repo_root)
    assert run.encoder("simcrop").read_bytes() != encoder
    assert yaml.safe_load((out / "pretrain.config.yaml").read_text())["pretrain"]["lr"] == 1e-3
    assert "pretrain.lr" in run.log("pretrain", "simcrop").read_text()


# Every rule names its software (conda: environment.yml), so no lint is accepted: the report is empty.
ACCEPTED_LINTS = ()


def test_workflow_lints_clean(repo_root, tmp_path, tiny_config_file, run_tool):
    result = run_tool(snakemake(repo_root, tmp_path, tiny_config_file, "--lint"), repo_root, check=False)
    output = result.stdout + result.stderr
    titles = [line.strip()[2:].rstrip(":") for line in output.splitlines() if line.startswith("    * ")]
    assert "Lints for" not in output or titles, output  # the format we parse is still the format printed
    unexpected = [t for t in titles if t not in ACCEPTED_LINTS]
    assert not unexpected, unexpected
    assert result.returncode == 0 and "Lints for" not in output, output


def test_bad_config_fails_before_any_work(repo_root, tmp_path, run_tool):
    bad = tmp_path / "bad.yaml"
    bad.write_text("preprocess:\n  shard_size: 0\n")
    result = run_tool(snakemake(repo_root, tmp_path, bad, "-n"), repo_root, check=False)
    assert result.returncode != 0
    assert "shard_size" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()
