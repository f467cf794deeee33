"""benchmarks/preprocess.py cannot rot: its --quick mode runs every stage on a small phantom and prints the
table, the MONAI comparison and the ratios."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_quick_benchmark_prints_stages_and_ratios(tmp_path, capsys):
    pytest.importorskip("monai")
    spec = importlib.util.spec_from_file_location("bench_preprocess", REPO / "benchmarks" / "preprocess.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--quick"])
    row = result["results"]["phantom"]
    assert set(module.STAGES) <= set(row)
    assert row["budget"] == pytest.approx(sum(row[k] for k in ("load", "to_hu", "validate", "grid", "qc")))
    assert row["same_lattice"] and row["diff_plain_max"] <= 1.0           # MONAI's values without anti-aliasing
    out = capsys.readouterr().out
    assert "| phantom |" in out and "× floor" in out and "same lattice as MONAI" in out
