"""The report's figures: PNG curves, and heat-map copies with SimCroP's first."""
from __future__ import annotations

from report_runs import PNG_MAGIC


def test_figures_are_png_and_heatmaps_prefer_simcrop(results_report, results_run):
    out, results = results_report
    for name in ("fraction_curves.png", "loss_curves.png"):
        data = (out / "figures" / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000
    # simcrop's two figures first (one found by name next to its JSON), then clip's
    copies = [(out / "figures" / f"heatmap_{k}.png").read_bytes() for k in (1, 2, 3)]
    assert copies == [PNG_MAGIC + b"simcrop-a", PNG_MAGIC + b"simcrop-b", PNG_MAGIC + b"clip-c"]
    assert not (out / "figures" / "heatmap_4.png").exists()
    assert "figures/heatmap_3.png" in results["figures"]
