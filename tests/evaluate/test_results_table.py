"""The results table: columns per task, dataset and fraction, values in their cells, intervals,
control rows, and the long tables behind the curve CSVs."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from report_runs import md_table


def test_columns_are_grouped_by_task_dataset_and_fraction(results_report):
    _, results = results_report
    columns = results["columns"]
    assert columns[:5] == ["probe main AUROC 10%", "probe main AUROC 100%", "probe ccccii acc 100%",
                           "segment luna16 Dice 100%", "zero-shot AUROC"]
    assert columns[5:13] == [f"{k} {d}" for d in ("report→volume", "volume→report")
                             for k in ("R@1", "R@5", "R@10", "mAP")]
    assert columns[13:] == ["grounding hit", "hit ÷ chance", "pointing"]


def test_values_land_in_their_cells(results_report):
    _, results = results_report
    rows = results["rows"]
    assert rows["simcrop"]["probe main AUROC 10%"] == pytest.approx(0.71)
    assert rows["simcrop"]["probe main AUROC 100%"] == pytest.approx(0.80)
    assert rows["random"]["probe main AUROC 10%"] == pytest.approx(0.52)
    assert rows["mae"]["probe main AUROC 10%"] is None           # mae probed at 100% only
    assert rows["simcrop"]["probe ccccii acc 100%"] == pytest.approx(0.9)
    assert rows["simcrop"]["segment luna16 Dice 100%"] == pytest.approx(0.65)
    assert rows["simcrop"]["R@5 volume→report"] == pytest.approx(0.45)
    assert rows["simcrop"]["R@5 report→volume"] == pytest.approx(0.5)
    assert rows["clip"]["grounding hit"] == pytest.approx(0.1)
    assert rows["abl_nocrop"]["zero-shot AUROC"] == pytest.approx(0.61)
    assert rows["mae"]["zero-shot AUROC"] is None
    assert set(results["not_applicable"]) == {"mae"}
    assert "zero-shot AUROC" in results["not_applicable"]["mae"] and "pointing" in results["not_applicable"]["mae"]
    assert results["chance"] == pytest.approx({"grounding hit": 0.066, "pointing": 0.066,
                                               "R@1 report→volume": 0.04, "R@5 report→volume": 0.2,
                                               "R@10 report→volume": 0.4, "R@1 volume→report": 0.04,
                                               "R@5 volume→report": 0.2, "R@10 volume→report": 0.4})
    assert len(results["sources"]) == 17   # 2 pretrain, 7 probe/segment, 8 text-task files
    on_disk = json.loads((results_report[0] / "results.json").read_text())
    assert on_disk["rows"] == rows


def test_csvs_hold_one_row_per_fraction_and_per_loss_point(results_report):
    out, _ = results_report
    fractions = pd.read_csv(out / "fraction_curves.csv")
    assert list(fractions.columns) == ["objective", "dataset", "task", "metric", "fraction", "value"]
    assert len(fractions) == 7   # random 2, mae 1, simcrop 2 + ccccii 1 + segment 1
    row = fractions[(fractions.objective == "simcrop") & (fractions.dataset == "main") & (fractions.fraction == 0.1)]
    assert row[["task", "metric"]].values.tolist() == [["probe", "auroc"]] and row.value.item() == pytest.approx(0.71)
    seg = fractions[fractions.task == "segment"]
    assert seg[["objective", "dataset", "metric", "fraction"]].values.tolist() == [["simcrop", "luna16", "dice", 1.0]]
    losses = pd.read_csv(out / "loss_curves.csv")
    assert list(losses.columns) == ["objective", "term", "step", "value"]
    assert sorted(set(zip(losses.objective, losses.term))) == [("mae", "loss"), ("simcrop", "align"),
                                                               ("simcrop", "loss")]
    assert len(losses) == 2 + 3 + 3
    last = losses[(losses.objective == "simcrop") & (losses.term == "loss")].sort_values("step").iloc[-1]
    assert (last.step, last.value) == (30, pytest.approx(5.0))


def test_grounding_cells_show_intervals_and_controls_get_rows(controls_report):
    import re

    out, results = controls_report
    assert results["objectives"] == ["mae", "simcrop", "simcrop_batchneg"]
    table = md_table((out / "results.md").read_text(encoding="utf-8"))
    assert list(table) == ["mae", "simcrop", "simcrop_batchneg", "location prior", "simcrop content-shuffled",
                           "simcrop_batchneg content-shuffled"]
    interval = re.compile(r"^-?\d+\.\d{3} \[-?\d+\.\d{3}, -?\d+\.\d{3}\]$")
    for row in ("simcrop", "location prior", "simcrop content-shuffled"):
        for column in ("grounding hit", "hit ÷ chance", "pointing"):
            assert interval.match(table[row][column]), (row, column, table[row][column])
    assert table["location prior"]["probe main AUROC 100%"] == ""          # controls: grounding cells only
    assert table["simcrop"]["probe main AUROC 100%"] == "0.700" and table["mae"]["grounding hit"] == "n/a"
    ci = results["intervals"]["simcrop"]["grounding hit"]
    assert ci["lo"] <= results["rows"]["simcrop"]["grounding hit"] <= ci["hi"]
    assert results["controls"]["location prior"] == {"control": "location_prior", "objective": "simcrop"}
    assert results["rows"]["location prior"]["grounding hit"] > results["rows"]["simcrop"]["grounding hit"]
