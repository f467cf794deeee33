"""Dataset overlays stand alone: the README's overlay lines run on a fresh folder dataset, every
config/datasets/*.yaml plans on its own, a missing root fails before any job naming key and path, and the
plain demo still plans its synthetic downstream sets.

Each test works in a fresh folder laid out like a clone (`workflow/` and `config/` linked from this
repository), so the commands are the README's, word for word, and the outputs land in tmp_path.
"""
import json
import re
import shlex
import shutil

import pandas as pd
import pytest
import yaml

from simcrop import layout

pytestmark = pytest.mark.slow

# The README's lines for your own data (a target goes before --configfile, which takes every word after it).
README_DRY_RUN = "snakemake -n data --cores 1 --configfile overlay.yaml"
README_RUN = "snakemake data --cores 1 --configfile overlay.yaml"
README_EXPERIMENT_DRY_RUN = "snakemake -n --cores 1 --configfile overlay.yaml"
DEMO_DRY_RUN = "snakemake -n --cores 2"
DEMO_SETS = ("radchestct", "ccccii", "luna16", "btcv")


def _clone(repo_root, tmp_path):
    work = tmp_path / "clone"
    work.mkdir(parents=True)
    for name in ("workflow", "config"):
        (work / name).symlink_to(repo_root / name, target_is_directory=True)
    return work


def _run(run_tool, line, work, check=True):
    result = run_tool(shlex.split(line), work, check=check)
    return result, result.stdout + result.stderr


def _planned(output) -> dict:
    """Job counts from Snakemake's dry-run table (`rule  count` lines)."""
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def _folder_dataset(shared_data, where):
    """Two real NIfTI chest CTs, one real DICOM series and a reports CSV of real CT-RATE report texts."""
    images = where / "images"
    images.mkdir(parents=True)
    shutil.copyfile(shared_data / "ct" / "cip_TestInput_chestct_64x64x50.nii.gz", images / "case_a.nii.gz")
    shutil.copyfile(shared_data / "ct" / "cip_copdgene10002K_insp_ct64.nii.gz", images / "case_b.nii.gz")
    series = images / "case_c"
    series.mkdir()
    for dcm in (shared_data / "dicom" / "lungpetctdx_A0002_B40f").iterdir():
        shutil.copyfile(dcm, series / dcm.name)
    lines = (shared_data / "reports" / "ctrate_sample_reports.jsonl").read_text().splitlines()[:3]
    texts = [json.loads(line)["text"] for line in lines]
    pd.DataFrame({"VolumeName": ["case_a", "case_b", "case_c"], "Findings_EN": texts,
                  "Impressions_EN": ["See findings."] * 3}).to_csv(where / "reports.csv", index=False)
    return images, where / "reports.csv"


def _user_overlay(repo_root, path, images, reports, extra=None):
    """config/datasets/folder.yaml with its placeholder paths replaced, as a user edits their copy."""
    text = (repo_root / "config" / "datasets" / "folder.yaml").read_text()
    assert "/path/to/images" in text and "/path/to/reports.csv" in text
    text = text.replace("/path/to/reports.csv", str(reports)).replace("/path/to/images", str(images))
    if extra:
        text += yaml.safe_dump(extra)
    path.write_text(text)
    return path


def test_readme_overlay_lines_run_on_a_fresh_folder_dataset(repo_root, tmp_path, shared_data, run_tool):
    work = _clone(repo_root, tmp_path)
    images, reports = _folder_dataset(shared_data, tmp_path / "mine")
    # Coarse spacing and a two-case montage keep the real run to seconds.
    _user_overlay(repo_root, work / "overlay.yaml", images, reports,
                  {"preprocess": {"spacing": [6.0, 6.0, 10.0]}, "show": {"n_cases": 2}})

    _, output = _run(run_tool, README_DRY_RUN, work)
    plan = _planned(output)
    assert plan.get("ingest") == 1 and "synthesize" not in plan and "prepare_downstream" not in plan, output

    # The whole experiment plans too: the demo's synthetic downstream sets are dropped with one notice line.
    _, output = _run(run_tool, README_EXPERIMENT_DRY_RUN, work)
    plan = _planned(output)
    assert "prepare_downstream" not in plan and "synthesize" not in plan and plan.get("report") == 1, output
    notices = [line for line in output.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and all(name in notices[0] for name in DEMO_SETS), output

    _run(run_tool, README_RUN, work)
    run = layout.Run(work / "results" / "mydata")
    qc = pd.read_csv(run.qc)
    assert sorted(qc.volume_id) == ["case_a", "case_b", "case_c"]
    assert run.montage.stat().st_size > 0
    sentences = [json.loads(line) for line in run.sentences.read_text().splitlines()]
    assert {s["volume_id"] for s in sentences} >= {"case_a", "case_b", "case_c"}
    assert not (work / "data").exists()         # nothing synthesized for a real dataset


@pytest.mark.parametrize("broken", ["images", "reports"])
def test_missing_root_fails_before_any_job_naming_key_and_path(repo_root, tmp_path, shared_data, run_tool,
                                                               broken):
    work = _clone(repo_root, tmp_path)
    images, reports = _folder_dataset(shared_data, tmp_path / "mine")
    key, missing = {"images": ("data.folder.images", tmp_path / "typo"),
                    "reports": ("data.folder.reports_csv", tmp_path / "reports_typo.csv")}[broken]
    if broken == "images":
        images = missing
    else:
        reports = missing
    _user_overlay(repo_root, work / "overlay.yaml", images, reports)
    result, output = _run(run_tool, README_RUN, work, check=False)
    assert result.returncode != 0
    assert f"config key {key}: {missing} does not exist" in output, output
    assert "Building DAG" not in output and not (work / "results").exists()


def _placeholders_to_folders(text, where):
    """Each `/path/to/X` of a shipped overlay → an existing folder (a file for a .csv) under `where`."""
    for placeholder in sorted(set(re.findall(r"/path/to/[\w./-]+", text))):
        target = where / placeholder.removeprefix("/path/to/")
        if placeholder.endswith(".csv"):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("VolumeName,Findings_EN,Impressions_EN\n")
        else:
            target.mkdir(parents=True, exist_ok=True)
        text = text.replace(placeholder, str(target))
    return text


def test_each_dataset_overlay_stands_alone(repo_root, tmp_path, run_tool):
    """Every config/datasets/*.yaml, its paths pointed at existing folders, plans the whole experiment on
    its own: main-data overlays without the demo's sets, downstream overlays with their one set (as
    shipped, with placeholder paths, each fails naming the key: tests/data/test_roots.py)."""
    overlays = sorted((repo_root / "config" / "datasets").glob("*.yaml"))
    assert {p.stem for p in overlays} >= {"ctrate", "folder", *DEMO_SETS}
    for overlay in overlays:
        work = _clone(repo_root, tmp_path / overlay.stem)
        text = _placeholders_to_folders(overlay.read_text(), tmp_path / overlay.stem / "data_of_user")
        (work / "overlay.yaml").write_text(text)
        _, output = _run(run_tool, README_EXPERIMENT_DRY_RUN, work)
        plan = _planned(output)
        if overlay.stem in DEMO_SETS:       # on the demo's pre-training: that one (real) set, nothing else
            assert plan.get("prepare_downstream") == 1, (overlay.name, output)
            assert "notice:" not in output, (overlay.name, output)
        else:
            assert "prepare_downstream" not in plan and "synthesize" not in plan, (overlay.name, output)
        assert plan.get("report") == 1, (overlay.name, output)


def test_plain_demo_still_plans_its_synthetic_downstream_sets(repo_root, tmp_path, run_tool):
    work = _clone(repo_root, tmp_path)
    _, output = _run(run_tool, DEMO_DRY_RUN, work)
    plan = _planned(output)
    assert plan.get("synthesize") == 1 and plan.get("prepare_downstream") == len(DEMO_SETS), output
    assert "notice:" not in output and not (work / "results").exists()
