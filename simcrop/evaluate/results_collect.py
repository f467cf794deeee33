"""Collect one run's results as plain dicts and frames: the per-task evaluation JSONs, the pre-training
metrics and loss curves, and Snakemake's benchmark tables. Any part may be missing; what is missing is
simply absent.

Read under run_dir:

    pretrain/<objective>/metrics.json                             final losses, throughput
    pretrain/<objective>/dvclive/plots/metrics/train/<term>.tsv   loss curves
    evaluate/<objective>/probe/<dataset>/<pct>.json               linear probe per data fraction
    evaluate/<objective>/segment/<dataset>/<pct>.json             UNETR Dice per data fraction
    evaluate/<objective>/{zeroshot,retrieval,grounding}.json      text tasks ("applicable": false -> "n/a")
    benchmarks/<rule>/<job>.tsv                                   Snakemake's measurement of each job
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Sequence

import pandas as pd

from simcrop import layout
from simcrop.evaluate.metrics import ACCURACY, MEAN_AUROC, MEAN_DICE

log = logging.getLogger(__name__)

ROW_ORDER = ("random", "mae", "clip", "simcrop", "simcrop_batchneg", "supervised")  # others after, alphabetically
HEATMAP_OBJECTIVE = "simcrop"     # its grounding figures come first: the method the README shows
MAIN_DATASET = layout.MAIN        # the pre-training corpus's test split: first among datasets
LOSS_CURVE_DIR = Path(layout.DVCLIVE, "plots", "metrics", "train")    # in a row's pretrain folder
NOT_LOSS_TERMS = frozenset({"lr", "data_wait_s", "data_wait_share", "samples_per_s"})
FRACTION_TASKS = layout.FRACTION_TASKS
TEXT_TASKS = layout.TEXT_TASKS
# What collect() reads, as glob patterns relative to run_dir (the run layout made relative).
IN_RUN = layout.Run("")
PATTERNS = (str(IN_RUN.pretrain_metrics("*")), str(IN_RUN.pretrain_dir("*") / LOSS_CURVE_DIR / "*.tsv"),
            *(str(IN_RUN.evaluation("*", task, "*", "*")) for task in FRACTION_TASKS),
            *(str(IN_RUN.evaluation("*", task)) for task in TEXT_TASKS))

# kind of a probe/segment file -> (key in its "test" dict, metric name in the CSV, column label)
FRACTION_METRICS = {"multilabel": (MEAN_AUROC, "auroc", "AUROC"),
                    "multiclass": (ACCURACY, "accuracy", "acc"),
                    "segment": (MEAN_DICE, "dice", "Dice")}
# Snakemake benchmark column -> (label, decimals); other columns (extended format) are left out
BENCHMARK_COLUMNS = {"s": ("wall time (s)", 1), "h:m:s": ("h:m:s", None), "max_rss": ("peak RSS (MiB)", 0),
                     "max_uss": ("peak USS (MiB)", 0), "cpu_time": ("CPU time (s)", 1),
                     "mean_load": ("mean CPU load (%)", 0), "io_in": ("read (MiB)", 1),
                     "io_out": ("written (MiB)", 1)}


def order_objectives(names) -> list[str]:
    """ROW_ORDER first (baselines before the method), then any other name (ablations) alphabetically."""
    names = set(names)
    return [n for n in ROW_ORDER if n in names] + sorted(names - set(ROW_ORDER))


def finite_number(value) -> float | None:
    """A finite float, or None (missing, null, NaN, not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def lookup_number(obj: dict, path: Sequence[str] | None) -> float | None:
    """The finite number at `path` (keys into nested dicts), or None."""
    for key in path or ():
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return finite_number(obj) if path else None


def lookup_interval(intervals, path) -> dict | None:
    """{"value", "lo", "hi"} of the metric at `path` in a file's "intervals" (None when absent)."""
    found = intervals.get(path[-1]) if isinstance(intervals, dict) and path else None
    if not isinstance(found, dict) or finite_number(found.get("value")) is None:
        return None
    return {k: finite_number(found.get(k)) for k in ("value", "lo", "hi")}


def pct_order(pct: str) -> float:
    """Sort key of a fraction's name ("10", "100"): its number; a name that is not one sorts last."""
    try:
        return float(pct)
    except ValueError:    # not written by simcrop; keep it, last
        return math.inf


def _read_loss_curves(folder: Path) -> dict:
    """{term: [[step, value], ...]} from dvclive's TSVs (header: [timestamp,] step, <term>)."""
    curves = {}
    for path in sorted(folder.glob("*.tsv")):
        term = path.stem
        if term in NOT_LOSS_TERMS:
            continue
        table = pd.read_csv(path, sep="\t")
        if "step" not in table or term not in table:
            log.warning("%s: no 'step' and %r columns; skipped", path, term)
            continue
        points = [[int(s), float(v)] for s, v in zip(table["step"], table[term]) if finite_number(v) is not None]
        if points:
            curves[term] = points
    return curves


def _merge_fractions(entries: dict, metrics: dict, stem: str, kind: str) -> None:
    """Add a probe/segment file's fractions to entries[pct]; the file named after a fraction wins it."""
    for pct, entry in metrics.get("fractions", {}).items():
        if pct not in entries or pct == stem:
            entries[pct] = {**entry, "kind": kind}


def _heatmap_paths(grounding: dict, grounding_json: Path) -> list[str]:
    """Existing files among the grounding figures. The JSON stores paths relative to where the job ran,
    so a path that does not resolve is looked up by name in its figures folder, then next to the JSON."""
    found = []
    for listed in grounding.get("figures") or []:
        name = Path(listed).name
        beside = (layout.figures_beside(grounding_json) / name, grounding_json.with_name(name))
        for candidate in (Path(listed), *beside):
            if candidate.is_file():
                found.append(str(candidate))
                break
        else:
            log.warning("grounding figure %s not found", listed)
    return found


def collect(run_dir) -> dict:
    """Everything found under run_dir, as plain JSON-able dicts.

    {"run_dir", "sources": [JSON files read], "objectives": {name (ordered): {"sources", "pretrain": metrics,
    "loss_curves": {term: [[step, value]]}, "probe" | "segment": {dataset: {pct: fraction entry + "kind"}},
    "zeroshot" | "retrieval" | "grounding": metrics, "heatmaps": [png paths]}}}; absent parts are left out.
    """
    run_dir = Path(run_dir)
    run = layout.Run(run_dir)
    found: dict[str, dict] = {}

    def part(name: str) -> dict:
        return found.setdefault(name, {"sources": []})

    def read(name: str, path: Path) -> dict:
        part(name)["sources"].append(str(path))
        return json.loads(path.read_text(encoding="utf-8"))

    for path in sorted(run_dir.glob(str(IN_RUN.pretrain_metrics("*")))):
        part(path.parent.name)["pretrain"] = read(path.parent.name, path)
    for folder in sorted(p for p in run_dir.glob(str(IN_RUN.pretrain_dir("*"))) if p.is_dir()):
        curves = _read_loss_curves(folder / LOSS_CURVE_DIR)
        if curves:
            part(folder.name)["loss_curves"] = curves
    for task in FRACTION_TASKS:
        for path in sorted(run_dir.glob(str(IN_RUN.evaluation("*", task, "*", "*")))):
            name, dataset = path.parents[2].name, path.parent.name
            metrics = read(name, path)
            kind = metrics.get("task", "multilabel") if task == "probe" else "segment"
            if kind not in FRACTION_METRICS:
                log.warning("%s: unknown task %r; skipped", path, kind)
                continue
            entries = part(name).setdefault(task, {}).setdefault(dataset, {})
            _merge_fractions(entries, metrics, path.stem, kind)
    for task in TEXT_TASKS:
        for path in sorted(run_dir.glob(str(IN_RUN.evaluation("*", task)))):
            part(path.parent.name)[task] = read(path.parent.name, path)
    for name, parts in found.items():
        if "grounding" in parts:
            parts["heatmaps"] = _heatmap_paths(parts["grounding"], run.evaluation(name, "grounding"))
    objectives = {name: found[name] for name in order_objectives(found)}
    return {"run_dir": str(run_dir), "objectives": objectives,
            "sources": [s for parts in objectives.values() for s in parts["sources"]]}


def read_benchmarks(run_dir) -> pd.DataFrame:
    """One row per measurement in run_dir/benchmarks/<rule>/<job>.tsv: rule, job (the path below the rule
    folder, no suffix) and Snakemake's columns (NaN where it wrote "NA" or "-")."""
    folder = layout.Run(run_dir).benchmarks
    frames = []
    for path in sorted(folder.rglob("*.tsv")) if folder.is_dir() else ():
        rel = path.relative_to(folder).with_suffix("")
        try:
            table = pd.read_csv(path, sep="\t", na_values=["NA", "-"])
        except (pd.errors.EmptyDataError, pd.errors.ParserError) as error:
            log.warning("%s: not a benchmark table (%s); skipped", path, error)
            continue
        table.insert(0, "job", "/".join(rel.parts[1:]) or rel.parts[0])
        table.insert(0, "rule", rel.parts[0])
        frames.append(table)
    columns = ["rule", "job", *BENCHMARK_COLUMNS]
    if not frames:
        return pd.DataFrame(columns=columns)
    table = pd.concat(frames, ignore_index=True)
    return table[[c for c in columns if c in table]]
