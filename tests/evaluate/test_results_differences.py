"""Paired differences: grounding vs its controls and other objectives, probe rows vs the baselines, and the
notes on what has no interval."""
from __future__ import annotations

import pytest

from report_runs import md_table


def test_differences_block_has_intervals_and_says_what_is_missing(controls_report):
    out, results = controls_report
    text = (out / "results.md").read_text(encoding="utf-8")
    block = text[text.index("Differences"):]
    assert "- simcrop − location prior: grounding hit " in block and "- simcrop − content-shuffled: " in block
    assert "- simcrop − simcrop_batchneg: grounding hit " in block          # same sentences: paired across objectives
    assert "simcrop − mae, probe: no interval" in block and "simcrop − mae, grounding: no interval" in block
    prior = [r for r in results["differences"] if (r["a"], r["b"], r["column"]) ==
             ("simcrop", "location prior", "grounding hit")][0]
    assert prior["lo"] <= prior["value"] <= prior["hi"] < 0                # the prior beats this model
    shifted = [r for r in results["differences"] if (r["a"], r["b"], r["column"]) ==
               ("simcrop", "simcrop_batchneg", "grounding hit")][0]
    assert shifted["value"] < 0
    page = (out / "results.html").read_text(encoding="utf-8")
    assert "<h2>Differences</h2>" in page and "simcrop − location prior" in page


def test_probe_cells_show_intervals_and_differences_are_paired(probe_ci_report):
    import re

    out, results, tests = probe_ci_report
    table = md_table((out / "results.md").read_text(encoding="utf-8"))
    interval = re.compile(r"^\d+\.\d{3} \[\d+\.\d{3}, \d+\.\d{3}\]$")
    for name in ("random", "mae", "simcrop"):
        for column in ("probe main AUROC 100%", "probe ccccii acc 100%"):
            assert interval.match(table[name][column]), (name, column, table[name][column])
        assert table[name]["probe main AUROC 10%"] == "0.600"                   # no interval in the file: none shown
        ci = results["intervals"][name]["probe main AUROC 100%"]
        assert ci["lo"] < results["rows"][name]["probe main AUROC 100%"] < ci["hi"]
    diffs = {(r["a"], r["b"], r["column"]): r for r in results["differences"]}
    for base in ("mae", "random"):
        d = diffs[("simcrop", base, "probe main AUROC 100%")]
        want = tests["simcrop"]["mean_auroc"] - tests[base]["mean_auroc"]
        assert d["value"] == pytest.approx(want) and d["lo"] < d["value"] < d["hi"]
        assert ("simcrop", base, "probe ccccii acc 100%") in diffs
    assert diffs[("simcrop", "random", "probe main AUROC 100%")]["lo"] > 0         # a clear gain excludes 0
    mae_gain = diffs[("mae", "random", "probe main AUROC 100%")]                    # does MAE beat no pre-training?
    assert mae_gain["value"] == pytest.approx(tests["mae"]["mean_auroc"] - tests["random"]["mean_auroc"])
    assert not any(r["a"] == "random" for r in results["differences"])
    text = (out / "results.md").read_text(encoding="utf-8")
    block = text[text.index("Differences"):]
    assert "- simcrop − mae: probe main AUROC 100% " in block and "- simcrop − random: probe main AUROC 100% " in block
    assert "simcrop − mae, probe: no interval for probe main AUROC 10% — the probe JSONs hold no per-volume" in block
