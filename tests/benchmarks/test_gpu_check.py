"""benchmarks/gpu_check.sh cannot rot: its --cpu-smoke mode runs every section on the CPU and prints the
table; without a GPU the real mode says so and fails; the table's rules (FAIL with a reason, timeouts,
a missing loader script, per-dtype kernel rows) are checked on hand-made section outputs."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def _helper():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args, timeout=300, **env):
    environment = {**os.environ, "PYTHON": sys.executable, **env}
    environment.pop("TRITON_INTERPRET", None)                 # the script decides, per section
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=environment, capture_output=True, text=True,
                          timeout=timeout)


def _table(text: str) -> dict:
    """check -> (status, result) of the Markdown table."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 4 and cells[1] in ("PASS", "FAIL", "SKIP", "N/A", "WARN"):
            rows[cells[0]] = (cells[1], cells[2])
    return rows


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cpu_smoke_runs_every_section_and_prints_one_table(tmp_path):
    result = _run("--cpu-smoke", "--out", str(tmp_path / "check.md"))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    rows = _table(result.stdout)
    assert rows["kernels fp32 (CPU interpreter)"][0] == "PASS"
    assert rows["kernels fp16 (CPU interpreter)"][0] == "PASS"
    assert rows["kernels bf16 (CPU interpreter)"][0] == "SKIP"     # bf16 tl.dot is wrong in the interpreter
    bench = [v for k, v in rows.items() if k.startswith("kernel bench")]
    assert bench and bench[0][0] == "PASS" and "peak" in bench[0][1]
    step = [v for k, v in rows.items() if k.startswith("pre-training step")]
    assert step and step[0][0] == "PASS" and "samples/s" in step[0][1] and "TFLOP/step" in step[0][1]
    loader = rows["loader vs step"]
    assert loader[0] in ("PASS", "WARN") and "loader / step" in loader[1], loader
    assert result.stdout.count("| check | status |") == 1 and "all checks passed" in result.stdout
    assert (tmp_path / "check.md").read_text() == result.stdout
    saved = json.loads((tmp_path / "check.json").read_text())
    assert saved["ok"] and saved["mode"] == "cpu-smoke" and len(saved["rows"]) == len(rows)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_without_cuda_the_real_check_says_so_and_fails(tmp_path):
    result = _run("--out", str(tmp_path / "check"))
    assert result.returncode == 1
    assert "no CUDA device" in result.stdout and "no CUDA device" in result.stderr
    assert all(status == "FAIL" for status, _ in _table(result.stdout).values())
    assert not json.loads((tmp_path / "check.json").read_text())["ok"]


def test_bad_argument_is_refused():
    result = _run("--bogus")
    assert result.returncode == 2 and "unknown argument" in result.stderr


# ----------------------------------------------------------------------------- the table, from section outputs
JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="t" name="test_sep[fp32-own]"/>
<testcase classname="t" name="test_sep[fp16-own]"/>
<testcase classname="t" name="test_sep[bf16-own]"><failure message="AssertionError: indices differ">x</failure></testcase>
<testcase classname="t" name="test_bfloat16_on_cuda"/>
<testcase classname="t" name="test_odd_shapes[3-2-130-16-64-all]"/>
<testcase classname="t" name="test_auto_on_cpu"><skipped message="interpreter session only"/></testcase>
</testsuite></testsuites>"""


def _work(tmp_path, cuda=True, **status) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "probe.json").write_text(json.dumps({"cuda": cuda, "device": "NVIDIA H200", "torch": "2.13",
                                                 "triton": "3.7.1"}))
    for section, line in status.items():
        (work / f"{section}.status").write_text(line)
        (work / f"{section}.log").write_text(f"{section} started\nsomething went wrong in {section}\n")
    return work


def test_report_rows_fail_with_reasons_and_timeouts(tmp_path):
    helper = _helper()
    work = _work(tmp_path, kernels="rc=1 limit=170 seconds=80.5", bench="rc=124 limit=90 seconds=90.0",
                 train="rc=0 limit=120 seconds=40", loader="rc=1 limit=60 seconds=3")
    (work / "kernels.xml").write_text(JUNIT)
    (work / "train.json").write_text(json.dumps({"peak_flops": 989e12, "rows": [{
        "size": "vit_base", "objective": "simcrop", "batch": 16, "samples_per_s": 20.0, "step_ms": 800.0,
        "peak_step_mb": 40960.0, "flops_per_step": 2.0e14, "mfu": 0.25, "precision": "bf16 autocast",
        "sdpa": ["flash"]}]}))
    summary = helper.build(work, "gpu")
    rows = {r["check"]: r for r in summary["rows"]}
    assert rows["kernels fp32 (CUDA, compiled)"]["status"] == "PASS"
    bf16 = rows["kernels bf16 (CUDA, compiled)"]
    assert bf16["status"] == "FAIL" and "1 of 2 failed" in bf16["result"] and "indices differ" in bf16["result"]
    assert rows["kernels other (CUDA, compiled)"]["result"] == "1 passed, 1 skipped"
    assert rows["kernel bench"]["status"] == "FAIL" and "timed out after 90 s" in rows["kernel bench"]["result"]
    step = rows["pre-training step vit_base simcrop batch 16"]
    assert step["status"] == "PASS" and "MFU 25.0 %" in step["result"] and "SDPA flash" in step["result"]
    loader = rows["loader vs step"]
    assert loader["status"] == "FAIL" and loader["result"] == "exit 1: loader started | something went wrong in loader"
    assert not summary["ok"]
    assert helper.report(work, "gpu", tmp_path / "out.json", 12.0) == 1
    assert "FAILED: kernels bf16 (CUDA, compiled), kernel bench" in (tmp_path / "out.md").read_text()


def test_report_loader_against_step_and_missing_dtype(tmp_path):
    helper = _helper()
    work = _work(tmp_path, kernels="rc=0 limit=170 seconds=50", bench="rc=0 limit=90 seconds=30",
                 train="rc=0 limit=120 seconds=40", loader="rc=0 limit=60 seconds=20")
    (work / "kernels.xml").write_text(JUNIT.replace("bf16", "fp32").replace("bfloat16", "x")
                                      .replace('<failure message="AssertionError: indices differ">x</failure>', ""))
    (work / "bench.json").write_text(json.dumps({"device": "cuda", "dtype": "bfloat16", "rows": [
        {"shape": [512, 32, 2744, 768], "mode": "all", "k": k, "pass": p, "speedup": 6.0, "roof_fraction": 0.5,
         "triton_peak_mb": 10.0, "naive_peak_mb": 900.0} for k in (8, 32, 64) for p in ("fwd", "fwd+bwd")]}))
    (work / "train.json").write_text(json.dumps({"peak_flops": None, "rows": [{
        "size": "tiny", "objective": "simcrop", "batch": 2, "samples_per_s": 10.0, "step_ms": 200.0,
        "peak_step_mb": None, "flops_per_step": 1e10, "mfu": None, "precision": "fp32", "sdpa": ["x"]}]}))
    loader_json = {"nifti_samples_per_s": 4.0, "cache_samples_per_s": 8.0, "ratio": 2.0, "identical_samples": True}
    (work / "loader.json").write_text(json.dumps(loader_json))
    rows = {r["check"]: r for r in helper.build(work, "gpu")["rows"]}
    bf16 = rows["kernels bf16 (CUDA, compiled)"]          # the CUDA run must cover bf16
    assert (bf16["status"], bf16["result"]) == ("FAIL", "no test ran for this dtype")
    assert "speed-up over naive 6.0/6.0/6.0×" in rows["kernel bench 512×32×2744×768 all, bfloat16 fwd+bwd"]["result"]
    loader = rows["loader vs step"]
    assert loader["status"] == "WARN" and "loader / step 0.80× per core, 2 DataLoader worker(s)" in loader["result"]
    (work / "loader.json").write_text(json.dumps({**loader_json, "identical_samples": False}))
    loader = {r["check"]: r for r in helper.build(work, "gpu")["rows"]}["loader vs step"]
    assert loader["status"] == "FAIL" and "different samples" in loader["result"]


def test_out_paths_name_both_files(tmp_path):
    helper = _helper()
    for name in ("x", "x.md", "x.json"):
        assert helper.out_paths(tmp_path / name) == (tmp_path / "x.md", tmp_path / "x.json")
