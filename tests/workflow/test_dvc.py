"""`dvc repro` in a fresh copy of the repository reproduces the data half; DVC and Snakemake agree."""
import json
import shutil
import subprocess

import pytest
import yaml

from simcrop import layout

pytestmark = pytest.mark.slow


def test_dvc_stage_deps_cover_every_rule_file(repo_root):
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    rule_files = {f"workflow/rules/{p.name}" for p in (repo_root / "workflow" / "rules").glob("*.smk")}
    assert rule_files <= {dep for stage in stages.values() for dep in stage["deps"]}
    snakefile = (repo_root / "workflow" / "Snakefile").read_text()
    for name, stage in stages.items():
        assert stage["cmd"].startswith("snakemake "), name
        assert f"rule {stage['cmd'].split()[-1]}:" in snakefile, name


def test_dvc_repro_in_a_fresh_clone(repo_root, tmp_path, run_tool, tiny_config):
    clone = tmp_path / "clone"
    tracked = subprocess.run(["git", "ls-files"], cwd=repo_root, capture_output=True, text=True).stdout.split()
    for name in tracked:
        if (repo_root / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo_root / name, clone / name)
    demo = yaml.safe_load((clone / "config" / "config.yaml").read_text())
    # the experiment stage on one row and one task (test_snakemake covers the rest)
    tiny_config.update(experiment={"objectives": ["simcrop"], "tasks": ["probe"], "downstream": []},
                       probe={"fractions": [1.0], "steps": 10})
    for section, values in tiny_config.items():
        demo[section] = {**demo[section], **values} if isinstance(values, dict) else values
    (clone / "config" / "config.yaml").write_text(yaml.safe_dump(demo))
    for args in (["git", "init", "-q"], ["git", "add", "-A"],
                 ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone"]):
        run_tool(args, clone)

    run_tool(["dvc", "repro"], clone)
    run = layout.Run(clone / "results" / "tiny")
    assert run.manifest.exists() and run.montage.exists()
    assert (clone / "dvc.lock").exists()
    metrics = run_tool(["dvc", "metrics", "show"], clone).stdout
    assert "preprocess_summary.json" in metrics
    shown = json.loads(run_tool(["dvc", "metrics", "show", "--json"], clone).stdout)[""]["data"]
    report = shown[str((run.report / "metrics.json").relative_to(clone))]["data"]["simcrop"]
    assert report["pretrain/loss"] > 0 and report["pretrain/samples_per_s"] > 0
    assert (run.report / "results.md").exists()

    again = run_tool(["dvc", "repro"], clone)
    assert "didn't change" in again.stdout or "up to date" in again.stdout
    assert "Running stage" not in again.stdout

    # A pre-training param changes: only the pretrain stage runs again.
    config = yaml.safe_load((clone / "config" / "config.yaml").read_text())
    config["pretrain"]["steps"] += 1
    (clone / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    changed = run_tool(["dvc", "repro"], clone).stdout
    assert "Running stage 'pretrain'" in changed
    assert "Running stage 'data'" not in changed
