"""One run's results -> the results report under out_dir: the entry point of `simcrop report`.

`write_report` collects the run's result files (results_collect), builds the table and its paired
differences (results_table, results_differences), draws the figures (results_figures), renders the pages
(results_pages) and writes under out_dir: results.json, results.md, metrics.json (flat, for `dvc metrics`),
fraction_curves.csv and loss_curves.csv (for `dvc plots`), figures/fraction_curves.png,
figures/loss_curves.png and figures/heatmap_<k>.png (stable copies of grounding heat maps for the README),
and for Snakemake's HTML report (`snakemake --report`): results.html (the table as a page), heatmaps.html
(the heat maps embedded in one page, however many there are) and benchmarks.html (wall time, memory and CPU
of each job that has a Snakemake benchmark file under run_dir/benchmarks/<rule>/...).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import pandas as pd

from simcrop.evaluate.metrics import json_safe
from simcrop.evaluate.results_collect import PATTERNS, collect, finite_number, read_benchmarks
from simcrop.evaluate.results_differences import differences
from simcrop.evaluate.results_figures import copy_heatmaps, plot_fraction_curves, plot_loss_curves
from simcrop.evaluate.results_pages import benchmarks_report, heatmaps_report, html_report, markdown_report
from simcrop.evaluate.results_table import fraction_curves, loss_curves, results_table
from simcrop.io import write_csv_atomic, write_json_atomic, write_text_atomic


def _flat_metrics(frame: pd.DataFrame, collected: dict) -> dict:
    """{objective: {metrics.json key: number}} for `dvc metrics show`: the table's values plus the final
    pre-training losses and throughput ("pretrain/<term>"); missing values are dropped."""
    keys = frame.attrs.get("keys", {})
    flat = {name: {keys[col]: float(value) for col, value in row.items() if not math.isnan(value)}
            for name, row in frame.iterrows()}
    for name in flat:
        pretrain = collected["objectives"].get(name, {}).get("pretrain", {})
        values = {**pretrain.get("losses", {}), "samples_per_s": pretrain.get("samples_per_s")}
        flat[name].update({f"pretrain/{k}": float(v) for k, v in values.items() if finite_number(v) is not None})
    return flat


def write_report(run_dir, out_dir, objectives: Sequence[str] | None = None, n_heatmaps: int = 2,
                 title: str = "") -> dict:
    """Write results.json/.md/.html, metrics.json, the two CSVs, figures/, heatmaps.html and benchmarks.html
    under out_dir; return results.json's dict.

    objectives: rows to show, in this order (None: every objective found, ROW_ORDER first).
    Raises FileNotFoundError when none of them has any result file under run_dir.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    collected = collect(run_dir)
    names = list(objectives) if objectives is not None else list(collected["objectives"])
    chosen = [collected["objectives"][n] for n in names if n in collected["objectives"]]
    if not chosen:
        raise FileNotFoundError(f"no results under {run_dir} for objectives {names or 'any'}; "
                                f"looked for {', '.join(PATTERNS)}")
    fig_dir = out_dir / "figures"
    frame = results_table(collected, names)
    diff_rows, diff_notes = differences(collected, names)
    frame.attrs.update(differences=diff_rows, difference_notes=diff_notes)
    fractions, losses = fraction_curves(collected, names), loss_curves(collected, names)
    write_csv_atomic(out_dir / "fraction_curves.csv", fractions)
    write_csv_atomic(out_dir / "loss_curves.csv", losses)
    plot_fraction_curves(fractions, names, fig_dir / "fraction_curves.png")
    plot_loss_curves(losses, names, fig_dir / "loss_curves.png")
    heatmaps = copy_heatmaps(collected, names, fig_dir, n_heatmaps)
    images = [("Metric vs. training data fraction", fig_dir / "fraction_curves.png"),
              ("Pre-training loss curves", fig_dir / "loss_curves.png")]
    images += [(f"Grounding heat map {k}", p) for k, p in enumerate(heatmaps, start=1)]
    images = [(caption, path.relative_to(out_dir).as_posix()) for caption, path in images]
    write_text_atomic(out_dir / "results.md", markdown_report(frame, images, title))
    write_text_atomic(out_dir / "results.html", html_report(frame, title))
    write_text_atomic(out_dir / "heatmaps.html", heatmaps_report(heatmaps))
    write_text_atomic(out_dir / "benchmarks.html", benchmarks_report(read_benchmarks(run_dir)))
    write_json_atomic(out_dir / "metrics.json", _flat_metrics(frame, collected))
    results = json_safe({
        "title": title, "run_dir": str(run_dir), "objectives": names, "columns": list(frame.columns),
        "rows": {name: {col: row[col] for col in frame.columns} for name, row in frame.iterrows()},
        "not_applicable": frame.attrs["not_applicable"], "chance": frame.attrs["chance"],
        "keys": frame.attrs["keys"], "intervals": frame.attrs["intervals"], "controls": frame.attrs["controls"],
        "differences": diff_rows, "difference_notes": diff_notes, "figures": [link for _, link in images],
        "sources": [s for parts in chosen for s in parts["sources"]]})
    write_json_atomic(out_dir / "results.json", results)
    return results
