"""The report's pages: the Markdown table with values, n/a and missing cells, chance levels and links."""
from __future__ import annotations

from report_runs import md_table


def test_markdown_table_shows_values_na_and_missing(results_report):
    out, _ = results_report
    text = (out / "results.md").read_text(encoding="utf-8")
    table = md_table(text)
    assert list(table) == ["random", "mae", "clip", "simcrop", "abl_nocrop"]
    assert table["simcrop"]["probe main AUROC 10%"] == "0.710"
    assert table["simcrop"]["probe ccccii acc 100%"] == "0.900"
    assert table["simcrop"]["grounding hit"] == "0.250"
    assert table["mae"]["zero-shot AUROC"] == "n/a"
    assert table["mae"]["grounding hit"] == "n/a"
    assert table["random"]["zero-shot AUROC"] == "–"
    assert table["mae"]["probe main AUROC 10%"] == "–"
    assert text.startswith("# Test run")
    assert "grounding hit 0.066" in text and "R@5 report→volume 0.200" in text
    for link in ("figures/fraction_curves.png", "figures/loss_curves.png", "figures/heatmap_1.png",
                 "figures/heatmap_3.png"):
        assert f"]({link})" in text
