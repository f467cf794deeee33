"""Results report entry point: a hand-written run of evaluation JSON files -> DVC metrics, row selection,
nothing found."""
from __future__ import annotations

import json

import pytest

from simcrop import layout
from simcrop.evaluate.report import write_report
from simcrop.evaluate.results_collect import collect
from simcrop.evaluate.results_table import results_table

from report_runs import md_table


def test_dvc_metrics_are_flat_and_numeric(results_report):
    out, _ = results_report
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"random", "mae", "clip", "simcrop", "abl_nocrop"}
    for values in metrics.values():
        assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values())
    assert metrics["simcrop"]["probe/main/100"] == pytest.approx(0.80)
    assert metrics["simcrop"]["probe/ccccii/100"] == pytest.approx(0.9)
    assert metrics["simcrop"]["segment/luna16/100"] == pytest.approx(0.65)
    assert metrics["simcrop"]["grounding/hit"] == pytest.approx(0.25)
    assert metrics["simcrop"]["retrieval/report_to_volume/recall@5"] == pytest.approx(0.5)
    # n/a tasks are dropped, not null; the final pre-training losses and throughput come along
    assert metrics["mae"] == {"probe/main/100": pytest.approx(0.6), "pretrain/loss": pytest.approx(0.8),
                              "pretrain/samples_per_s": pytest.approx(2.5)}
    assert metrics["simcrop"]["pretrain/loss"] == pytest.approx(5.0) and "pretrain/loss" not in metrics["random"]


def test_objectives_restrict_and_order_rows(results_run, tmp_path):
    results = write_report(results_run, tmp_path, objectives=["simcrop", "random"], n_heatmaps=1)
    assert results["objectives"] == ["simcrop", "random"]
    assert list(md_table((tmp_path / "results.md").read_text(encoding="utf-8"))) == ["simcrop", "random"]
    assert "grounding hit" in results["columns"] and "mae" not in results["rows"]
    assert (tmp_path / "figures/heatmap_1.png").exists() and not (tmp_path / "figures/heatmap_2.png").exists()
    frame = results_table(collect(results_run))
    assert frame.loc["random", "probe main AUROC 100%"] == pytest.approx(0.55)


def test_nothing_found_raises(tmp_path):
    layout.Run(tmp_path).evaluate_dir("simcrop").mkdir(parents=True)      # a row folder, no result in it
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        write_report(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
