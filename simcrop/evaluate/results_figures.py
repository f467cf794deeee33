"""The results report's figures (matplotlib, no display): metric vs. training-data fraction and pre-training
loss curves as PNGs, and stable copies of the first grounding heat maps (heatmap_<k>.png, for the README).
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Sequence

import pandas as pd

from simcrop.evaluate.results_collect import FRACTION_TASKS, HEATMAP_OBJECTIVE, MAIN_DATASET
from simcrop.io import atomic_path

LOSS_TERM_ORDER = ("loss", "image", "align", "report")
PANEL_SIZE = (4.0, 3.0)           # inches per subplot
PANEL_COLUMNS = 3
DPI = 120


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")   # no display on cluster nodes
    import matplotlib.pyplot as plt

    return plt


def _panels(plt, n: int):
    """A figure with n panels (one 'no data' panel when n is 0) and its flat list of used axes."""
    cols = max(1, min(PANEL_COLUMNS, n))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_SIZE[0] * cols, PANEL_SIZE[1] * rows), squeeze=False)
    axes = list(axes.ravel())
    for ax in axes[n:]:
        ax.axis("off")
    if n == 0:
        axes[0].text(0.5, 0.5, "no data", ha="center", va="center", transform=axes[0].transAxes)
    return fig, axes[:n]


def _colors(plt, objectives: Sequence[str]) -> dict:
    """One colour per objective, the same in every panel and figure."""
    cmap = plt.get_cmap("tab10")
    return {name: cmap(i % cmap.N) for i, name in enumerate(objectives)}


def _save(plt, fig, out_png: Path) -> None:
    try:
        fig.tight_layout()
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(fig)


def plot_fraction_curves(curves: pd.DataFrame, objectives: Sequence[str], out_png) -> None:
    """Metric vs data fraction (log x): one panel per (task, dataset), one line per objective."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter

    panels = sorted(set(zip(curves["task"], curves["dataset"], curves["metric"])),
                    key=lambda p: (FRACTION_TASKS.index(p[0]), p[1] != MAIN_DATASET, p[1], p[2]))
    fig, axes = _panels(plt, len(panels))
    colors = _colors(plt, objectives)
    for ax, (task, dataset, metric) in zip(axes, panels):
        panel = curves[(curves["task"] == task) & (curves["dataset"] == dataset) & (curves["metric"] == metric)]
        for name in objectives:
            line = panel[panel["objective"] == name].sort_values("fraction")
            if len(line):
                ax.plot(100 * line["fraction"], line["value"], marker="o", color=colors[name], label=name)
        ax.set(xscale="log", xlabel="training data (%)", ylabel=metric, title=f"{task} {dataset}")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))   # 1, 10, 100 rather than 10^k
        ax.legend(fontsize="small")
    _save(plt, fig, Path(out_png))


def _term_order(term: str) -> tuple:
    return (LOSS_TERM_ORDER.index(term) if term in LOSS_TERM_ORDER else len(LOSS_TERM_ORDER), term)


def plot_loss_curves(curves: pd.DataFrame, objectives: Sequence[str], out_png) -> None:
    """Pre-training loss vs step: one panel per loss term, one line per objective."""
    plt = _pyplot()
    terms = sorted(set(curves["term"]), key=_term_order)
    fig, axes = _panels(plt, len(terms))
    colors = _colors(plt, objectives)
    for ax, term in zip(axes, terms):
        panel = curves[curves["term"] == term]
        for name in objectives:
            line = panel[panel["objective"] == name].sort_values("step")
            if len(line):
                ax.plot(line["step"], line["value"], color=colors[name], label=name)
        ax.set(xlabel="step", ylabel=term, title=term)
        ax.legend(fontsize="small")
    _save(plt, fig, Path(out_png))


def copy_heatmaps(collected: dict, objectives: Sequence[str], fig_dir: Path, n: int) -> list[Path]:
    """Copy the first n grounding figures (HEATMAP_OBJECTIVE's first) to fig_dir/heatmap_<k>.png, k from 1."""
    order = sorted(objectives, key=lambda name: name != HEATMAP_OBJECTIVE)   # stable: keeps the rest's order
    sources = [p for name in order for p in collected["objectives"].get(name, {}).get("heatmaps", [])][:n]
    copies = []
    for k, source in enumerate(sources, start=1):
        dest = fig_dir / f"heatmap_{k}.png"
        with atomic_path(dest) as tmp:
            shutil.copyfile(source, tmp)
        copies.append(dest)
    return copies
