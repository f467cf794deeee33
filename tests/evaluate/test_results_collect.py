"""Collecting a run's result files: which objectives are found and in what order (baselines first)."""
from __future__ import annotations


def test_rows_are_ordered_baselines_first_then_ablations(results_report):
    _, results = results_report
    assert results["objectives"] == ["random", "mae", "clip", "simcrop", "abl_nocrop"]
