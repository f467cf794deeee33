"""One run's evaluation JSON files -> the results table (JSON, Markdown), DVC metrics/plots files, figures.

Read under run_dir; any part may be missing, and what is missing is simply absent from the table:

    pretrain/<objective>/metrics.json                             final losses, throughput
    pretrain/<objective>/dvclive/plots/metrics/train/<term>.tsv   loss curves
    evaluate/<objective>/probe/<dataset>/<pct>.json               linear probe per data fraction
    evaluate/<objective>/segment/<dataset>/<pct>.json             UNETR Dice per data fraction
    evaluate/<objective>/{zeroshot,retrieval,grounding}.json      text tasks ("applicable": false -> "n/a")

Written under out_dir by `write_report`: results.json, results.md, metrics.json (flat, for `dvc metrics`),
fraction_curves.csv and loss_curves.csv (for `dvc plots`), figures/fraction_curves.png,
figures/loss_curves.png and figures/heatmap_<k>.png (stable copies of grounding heat maps for the README),
and for Snakemake's HTML report (`snakemake --report`): results.html (the table as a page), heatmaps.html
(the heat maps embedded in one page, however many there are) and benchmarks.html (wall time, memory and CPU
of each job that has a Snakemake benchmark file under run_dir/benchmarks/<rule>/...).

Column names: "probe <dataset> AUROC|acc <pct>%", "segment <dataset> Dice <pct>%", "zero-shot AUROC",
"R@1|R@5|R@10|mAP report→volume|volume→report", "grounding hit", "hit ÷ chance", "pointing".

Grounding and probe cells read `value [lo, hi]` where the file carries a 95 % patient-level bootstrap
interval (grounding.json "intervals"; a probe fraction's "test" "intervals").
Its controls get rows of their own under the objectives, with grounding cells only: "location prior" (the
sentence's location words on the anatomy maps, no image; from HEATMAP_OBJECTIVE's file, else the first)
and "<objective> content-shuffled" (that model on another patient's patch features, positions kept). A
"Differences" block under the table gives paired differences with intervals: each patch-feature objective
minus the location prior and minus its content-shuffled control, the main objective minus the other
objectives scored on the same sentences, and, for the linear probe, SimCroP − MAE and SimCroP − random
(PROBE_BASELINES) per dataset and fraction: mean AUROC (accuracy for multiclass) recomputed from the probe
JSONs' per-volume test scores on the same test volumes and the same patient resamples (or a note on why
there is none: files without per-volume scores, different test volumes).
"""
from __future__ import annotations

import base64
import html
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Sequence

import pandas as pd

from simcrop import layout
from simcrop.evaluate.bootstrap import N_BOOT, ClusterBootstrap, format_interval
from simcrop.evaluate.metrics import ACCURACY, MEAN_AUROC, MEAN_DICE, json_safe
from simcrop.io import atomic_path, write_csv_atomic, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

ROW_ORDER = ("random", "mae", "clip", "simcrop", "simcrop_batchneg", "supervised")  # others after, alphabetically
HEATMAP_OBJECTIVE = "simcrop"     # its grounding figures come first: the method the README shows
PROBE_BASELINES = ("mae", "random")     # probe differences: every other pre-trained row − each baseline
NOT_COMPARED = ("supervised",)            # the probe's upper bound, not a method: no difference rows
MAIN_DATASET = layout.MAIN        # the pre-training corpus's test split: first among datasets
LOSS_CURVE_DIR = Path(layout.DVCLIVE, "plots", "metrics", "train")    # in a row's pretrain folder
NOT_LOSS_TERMS = frozenset({"lr", "data_wait_s", "data_wait_share", "samples_per_s"})
LOSS_TERM_ORDER = ("loss", "image", "align", "report")
FRACTION_TASKS = layout.FRACTION_TASKS
TEXT_TASKS = layout.TEXT_TASKS
# What collect() reads, as glob patterns relative to run_dir (the run layout made relative).
_IN_RUN = layout.Run("")
PATTERNS = (str(_IN_RUN.pretrain_metrics("*")), str(_IN_RUN.pretrain_dir("*") / LOSS_CURVE_DIR / "*.tsv"),
            *(str(_IN_RUN.evaluation("*", task, "*", "*")) for task in FRACTION_TASKS),
            *(str(_IN_RUN.evaluation("*", task)) for task in TEXT_TASKS))

# kind of a probe/segment file -> (key in its "test" dict, metric name in the CSV, column label)
FRACTION_METRICS = {"multilabel": (MEAN_AUROC, "auroc", "AUROC"),
                    "multiclass": (ACCURACY, "accuracy", "acc"),
                    "segment": (MEAN_DICE, "dice", "Dice")}

RETRIEVAL_DIRECTIONS = {"report_to_volume": "report→volume", "volume_to_report": "volume→report"}
RETRIEVAL_METRICS = {"recall@1": "R@1", "recall@5": "R@5", "recall@10": "R@10", "map": "mAP"}
# text task -> columns as (path to the value, column label, metrics.json key, path to its chance level)
TEXT_COLUMNS = {
    "zeroshot": (((MEAN_AUROC,), "zero-shot AUROC", "zeroshot/auroc", None),),
    "retrieval": tuple(((d, m), f"{short} {arrow}", f"retrieval/{d}/{m}",
                        (d, f"chance_{m}") if m.startswith("recall@") else None)
                       for d, arrow in RETRIEVAL_DIRECTIONS.items() for m, short in RETRIEVAL_METRICS.items()),
    "grounding": ((("hit_fraction",), "grounding hit", "grounding/hit", ("hit_fraction_chance",)),
                  (("hit_ratio_to_chance",), "hit ÷ chance", "grounding/hit_ratio", None),
                  (("pointing_game",), "pointing", "grounding/pointing", ("pointing_chance",))),
}

DECIMALS = 3
MISSING, NOT_APPLICABLE = "–", "n/a"
# grounding.json control -> row label ("{objective}" filled for per-model controls)
GROUNDING_CONTROLS = {"location_prior": "location prior", "content_shuffled": "{objective} content-shuffled"}
GROUNDING_DIFFERENCE_COLUMNS = {"hit_fraction": "grounding hit", "pointing_game": "pointing",
                                "hit_ratio_to_chance": "hit ÷ chance"}
# Snakemake benchmark column -> (label, decimals); other columns (extended format) are left out
BENCHMARK_COLUMNS = {"s": ("wall time (s)", 1), "h:m:s": ("h:m:s", None), "max_rss": ("peak RSS (MiB)", 0),
                     "max_uss": ("peak USS (MiB)", 0), "cpu_time": ("CPU time (s)", 1),
                     "mean_load": ("mean CPU load (%)", 0), "io_in": ("read (MiB)", 1),
                     "io_out": ("written (MiB)", 1)}
PAGE_STYLE = ("body{font-family:system-ui,sans-serif;margin:1.5em;color:#111}"
              "table{border-collapse:collapse;font-size:14px}"
              "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}"
              "th{white-space:normal;vertical-align:bottom;min-width:4.5em}"
              "th:first-child,td:first-child,th.text,td.text{text-align:left}thead th{background:#eee}"
              "p{max-width:60em}img{max-width:100%}figure{margin:0 0 1.5em}")
PANEL_SIZE = (4.0, 3.0)           # inches per subplot
PANEL_COLUMNS = 3
DPI = 120


# ---------------------------------------------------------------- reading

def order_objectives(names) -> list[str]:
    """ROW_ORDER first (baselines before the method), then any other name (ablations) alphabetically."""
    names = set(names)
    return [n for n in ROW_ORDER if n in names] + sorted(names - set(ROW_ORDER))


def _number(value) -> float | None:
    """A finite float, or None (missing, null, NaN, not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _lookup(obj: dict, path: Sequence[str] | None) -> float | None:
    for key in path or ():
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return _number(obj) if path else None


def _pct_order(pct: str) -> float:
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
        points = [[int(s), float(v)] for s, v in zip(table["step"], table[term]) if _number(v) is not None]
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

    for path in sorted(run_dir.glob(str(_IN_RUN.pretrain_metrics("*")))):
        part(path.parent.name)["pretrain"] = read(path.parent.name, path)
    for folder in sorted(p for p in run_dir.glob(str(_IN_RUN.pretrain_dir("*"))) if p.is_dir()):
        curves = _read_loss_curves(folder / LOSS_CURVE_DIR)
        if curves:
            part(folder.name)["loss_curves"] = curves
    for task in FRACTION_TASKS:
        for path in sorted(run_dir.glob(str(_IN_RUN.evaluation("*", task, "*", "*")))):
            name, dataset = path.parents[2].name, path.parent.name
            metrics = read(name, path)
            kind = metrics.get("task", "multilabel") if task == "probe" else "segment"
            if kind not in FRACTION_METRICS:
                log.warning("%s: unknown task %r; skipped", path, kind)
                continue
            entries = part(name).setdefault(task, {}).setdefault(dataset, {})
            _merge_fractions(entries, metrics, path.stem, kind)
    for task in TEXT_TASKS:
        for path in sorted(run_dir.glob(str(_IN_RUN.evaluation("*", task)))):
            part(path.parent.name)[task] = read(path.parent.name, path)
    for name, parts in found.items():
        if "grounding" in parts:
            parts["heatmaps"] = _heatmap_paths(parts["grounding"], run.evaluation(name, "grounding"))
    objectives = {name: found[name] for name in order_objectives(found)}
    return {"run_dir": str(run_dir), "objectives": objectives,
            "sources": [s for parts in objectives.values() for s in parts["sources"]]}


# ---------------------------------------------------------------- table

def _fraction_column(task: str, dataset: str, entry: dict, pct: str) -> str:
    return f"{task} {dataset} {FRACTION_METRICS[entry['kind']][2]} {pct}%"


def _fraction_cells(parts: dict) -> list[dict]:
    cells = []
    for rank, task in enumerate(FRACTION_TASKS):
        for dataset, entries in parts.get(task, {}).items():
            for pct, entry in entries.items():
                test_key, _, label = FRACTION_METRICS[entry["kind"]]
                cells.append({"column": _fraction_column(task, dataset, entry, pct), "key": f"{task}/{dataset}/{pct}",
                              "value": _lookup(entry, ("test", test_key)), "applicable": True, "chance": None,
                              "interval": _interval((entry.get("test") or {}).get("intervals"), (test_key,)),
                              "order": (rank, int(dataset != MAIN_DATASET), dataset, label, _pct_order(pct))})
    return cells


def _text_cells(parts: dict) -> list[dict]:
    cells = []
    for rank, task in enumerate(TEXT_TASKS, start=len(FRACTION_TASKS)):
        if task not in parts:
            continue
        metrics = parts[task]
        applicable = metrics.get("applicable", True) is not False
        for i, (path, label, key, chance_path) in enumerate(TEXT_COLUMNS[task]):
            cells.append({"column": label, "key": key, "applicable": applicable,
                          "value": _lookup(metrics, path) if applicable else None,
                          "chance": _lookup(metrics, chance_path) if applicable else None,
                          "interval": _interval(metrics.get("intervals"), path) if applicable else None,
                          "order": (rank, 0, "", "", float(i))})
    return cells


def _interval(intervals, path) -> dict | None:
    """{"value", "lo", "hi"} of the metric at `path` in a file's "intervals" (None when absent)."""
    found = intervals.get(path[-1]) if isinstance(intervals, dict) and path else None
    if not isinstance(found, dict) or _number(found.get("value")) is None:
        return None
    return {k: _number(found.get(k)) for k in ("value", "lo", "hi")}


def _grounding_main(found: dict, names: Sequence[str]) -> str | None:
    """The objective whose grounding file supplies the shared controls: HEATMAP_OBJECTIVE first."""
    with_controls = [n for n in names if isinstance(found.get(n, {}).get("grounding", {}).get("location_prior"), dict)
                     and _number(found[n]["grounding"]["location_prior"].get("hit_fraction")) is not None]
    return HEATMAP_OBJECTIVE if HEATMAP_OBJECTIVE in with_controls else (with_controls[0] if with_controls else None)


def _control_cells(found: dict, names: Sequence[str]) -> list[tuple[str, dict, list[dict]]]:
    """(row label, {"control", "objective"}, grounding cells) of the controls in the grounding files."""
    rows = []
    main = _grounding_main(found, names)
    for name in names:
        metrics = found.get(name, {}).get("grounding", {})
        for control, label in GROUNDING_CONTROLS.items():
            data = metrics.get(control)
            if control == "location_prior" and name != main:
                continue                                 # the same words and maps: shown once
            if not isinstance(data, dict) or _number(data.get("hit_fraction")) is None:
                continue
            cells = [{"column": col, "key": key, "applicable": True, "value": _lookup(data, path),
                      "chance": None, "interval": _interval(data.get("intervals"), path)}
                     for path, col, key, _ in TEXT_COLUMNS["grounding"]]
            rows.append((label.format(objective=name), {"control": control, "objective": name}, cells))
    return rows


def results_table(collected: dict, objectives: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per objective (ROW_ORDER, or `objectives` as given), one float column per metric; NaN where
    missing or not applicable.

    attrs: "keys" {column: metrics.json key}, "not_applicable" {objective: [columns]}, "chance" {column: the
    first objective's chance level, where the file gives one}.
    """
    found = collected["objectives"]
    names = list(objectives) if objectives is not None else list(found)
    cells = [{**c, "objective": name} for name in names
             for c in _fraction_cells(found.get(name, {})) + _text_cells(found.get(name, {}))]
    columns = list(dict.fromkeys(c["column"] for c in sorted(cells, key=lambda c: c["order"])))
    controls = {label: info for label, info, _ in _control_cells(found, names)}
    cells += [{**c, "objective": label} for label, _, row in _control_cells(found, names) for c in row]
    frame = pd.DataFrame(math.nan, index=pd.Index(names + list(controls), name="objective"), columns=columns,
                         dtype=float)
    not_applicable: dict[str, list[str]] = {}
    chance: dict[str, float] = {}
    intervals: dict[str, dict[str, dict]] = {}
    for c in cells:
        if c["value"] is not None:
            frame.loc[c["objective"], c["column"]] = c["value"]
        if not c["applicable"]:
            not_applicable.setdefault(c["objective"], []).append(c["column"])
        if c["chance"] is not None:
            chance.setdefault(c["column"], c["chance"])
        if c.get("interval") is not None:
            intervals.setdefault(c["objective"], {})[c["column"]] = c["interval"]
    frame.attrs.update(keys={c["column"]: c["key"] for c in cells}, not_applicable=not_applicable,
                       chance={col: chance[col] for col in columns if col in chance}, intervals=intervals,
                       controls=controls)
    return frame


def _per_sentence_match(a: dict, b: dict) -> bool:
    return all(isinstance(x, dict) for x in (a, b)) and a.get("volume_id") == b.get("volume_id") and \
        a.get("patient_id") == b.get("patient_id") and bool(a.get("volume_id"))


def differences(collected: dict, names: Sequence[str]) -> tuple[list[dict], list[str]]:
    """Paired differences with 95 % patient-level bootstrap intervals, and notes on what has none.

    Rows {"a", "b", "column", "value", "lo", "hi"}: each objective minus its grounding controls (from its
    grounding.json "differences"), the main grounding objective minus every other objective whose grounding
    was scored on the same sentences (bootstrapped here from the "per_sentence" records), the probe's
    each pre-trained row − PROBE_BASELINES (`probe_differences`), and notes on what has no interval and why.
    """
    from simcrop.evaluate.grounding import bootstrap_grounding

    found = collected["objectives"]
    rows, notes = [], []
    for name in names:
        metrics = found.get(name, {}).get("grounding", {})
        for control, label in GROUNDING_CONTROLS.items():
            diff = (metrics.get("differences") or {}).get(f"model_minus_{control}")
            for key, column in GROUNDING_DIFFERENCE_COLUMNS.items():
                ci = _interval(diff, (key,)) if isinstance(diff, dict) else None
                if ci is not None:
                    rows.append({"a": name, "b": label.format(objective=name).replace(f"{name} ", ""),
                                 "column": column, **ci})
    main = _grounding_main(found, names)
    per_main = found.get(main, {}).get("grounding", {}).get("per_sentence") if main else None
    for name in names:
        per = found.get(name, {}).get("grounding", {}).get("per_sentence")
        if name == main or not _per_sentence_match(per_main, per):
            continue
        joint = {**per_main, "model": per_main["model"], "location_prior": per["model"], "content_shuffled": None}
        boot = bootstrap_grounding(joint)["differences"]["model_minus_location_prior"]
        rows += [{"a": main, "b": name, "column": column, **_interval(boot, (key,))}
                 for key, column in GROUNDING_DIFFERENCE_COLUMNS.items() if _interval(boot, (key,))]
    if "simcrop" in names and "mae" in names and "grounding" in found.get("simcrop", {}) and \
            not any(r["a"] == "simcrop" and r["b"] == "mae" for r in rows):
        notes.append("simcrop − mae, grounding: no interval — MAE has no text side, so no grounding scores.")
    probe_rows, probe_notes = probe_differences(found, names)
    return rows + probe_rows, notes + probe_notes


def _paired_probe(a: dict, b: dict) -> dict | str:
    """main metric of fraction entry a − that of b with its interval, paired over the same test volumes
    and patient resamples; or why there is none."""
    from simcrop.evaluate.metrics import bootstrap_statistic as main_statistic

    pa, pb = ((e.get("test") or {}).get("per_volume") for e in (a, b))
    if not (isinstance(pa, dict) and isinstance(pb, dict)):
        return "the probe JSONs hold no per-volume test scores (written before they were stored)"
    if a["kind"] != b["kind"]:
        return f"different tasks ({a['kind']}, {b['kind']})"
    row_b = {v: i for i, v in enumerate(pb["volume_id"])}
    if sorted(pa["volume_id"]) != sorted(row_b) or len(row_b) != len(pb["volume_id"]):
        return "different test volumes"
    order = [row_b[v] for v in pa["volume_id"]]
    if [pb["patient_id"][i] for i in order] != list(pa["patient_id"]) or \
            [pb["labels"][i] for i in order] != list(pa["labels"]):
        return "the same test volumes carry different patients or labels"
    fa = main_statistic(a["kind"], pa["labels"], pa["probabilities"])
    fb = main_statistic(a["kind"], pa["labels"], [pb["probabilities"][i] for i in order])
    boot = ClusterBootstrap(pa["patient_id"], n_boot=N_BOOT, seed=0)
    return boot.stat(lambda idx: fa(idx) - fb(idx))


def probe_differences(collected_objectives: dict, names: Sequence[str]) -> tuple[list[dict], list[str]]:
    """Each pre-trained row (SimCroP, its variants, CLIP; not a baseline nor the supervised bound) − each of
    PROBE_BASELINES, and mae − random (does masked modelling beat no pre-training?), per dataset and
    fraction both probed: rows {"a", "b", "column", "value", "lo", "hi"} (column as in the table) and a note
    per pair of rows for fractions without."""
    mains = [n for n in names if n not in (*PROBE_BASELINES, *NOT_COMPARED)]
    pairs = [(a, b) for a in mains for b in PROBE_BASELINES if b in names]
    pairs += [pair for pair in [PROBE_BASELINES] if all(n in names for n in pair)]
    rows, notes = [], []
    for a, b in pairs:
        pair_rows, missing = _probe_pair(collected_objectives.get(a, {}).get("probe", {}),
                                         collected_objectives.get(b, {}).get("probe", {}))
        rows += [{"a": a, "b": b, **row} for row in pair_rows]
        notes += [f"{a} − {b}, probe: no interval for {', '.join(columns)} — {why}." for why, columns in missing.items()]
    return rows, notes


def _probe_pair(main: dict, other: dict) -> tuple[list[dict], dict[str, list[str]]]:
    """Paired probe differences main − other per dataset and fraction, and {why: columns} without one."""
    rows, missing = [], {}
    for dataset in sorted(main, key=lambda d: (d != MAIN_DATASET, d)):          # the table's column order
        for pct, entry in sorted(main[dataset].items(), key=lambda item: _pct_order(item[0])):
            if pct not in other.get(dataset, {}):
                continue
            column = _fraction_column("probe", dataset, entry, pct)
            diff = _paired_probe(entry, other[dataset][pct])
            if isinstance(diff, str):
                missing.setdefault(diff, []).append(column)
            elif _number(diff["value"]) is not None:
                rows.append({"column": column, **{k: _number(diff[k]) for k in ("value", "lo", "hi")}})
    return rows, missing


def fraction_curves(collected: dict, objectives: Sequence[str]) -> pd.DataFrame:
    """Long table objective, dataset, task, metric, fraction, value: one row per scored probe/segment
    fraction (a null test metric has no point to plot, so it is left out)."""
    rows = []
    for name in objectives:
        parts = collected["objectives"].get(name, {})
        for task in FRACTION_TASKS:
            for dataset, entries in parts.get(task, {}).items():
                for pct, entry in entries.items():
                    test_key, metric, _ = FRACTION_METRICS[entry["kind"]]
                    value = _lookup(entry, ("test", test_key))
                    fraction = _number(entry.get("fraction"))
                    if value is not None:
                        rows.append({"objective": name, "dataset": dataset, "task": task, "metric": metric,
                                     "fraction": fraction if fraction is not None else _pct_order(pct) / 100,
                                     "value": value})
    return pd.DataFrame(rows, columns=["objective", "dataset", "task", "metric", "fraction", "value"])


def loss_curves(collected: dict, objectives: Sequence[str]) -> pd.DataFrame:
    """Long table objective, term, step, value from the dvclive TSVs."""
    rows = [{"objective": name, "term": term, "step": step, "value": value}
            for name in objectives
            for term, points in collected["objectives"].get(name, {}).get("loss_curves", {}).items()
            for step, value in points]
    return pd.DataFrame(rows, columns=["objective", "term", "step", "value"])


# ---------------------------------------------------------------- figures

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


# ---------------------------------------------------------------- writing

def _cell(value: float, not_applicable: bool, interval: dict | None = None, control: bool = False) -> str:
    if not_applicable:
        return NOT_APPLICABLE
    if math.isnan(value):
        return "" if control else MISSING
    if interval is not None and _number(interval.get("value")) is not None:
        return format_interval({**interval, "value": value}, DECIMALS)
    return f"{value:.{DECIMALS}f}"


def _row_cells(frame: pd.DataFrame, name: str, row) -> list[str]:
    na = frame.attrs.get("not_applicable", {}).get(name, ())
    ci = frame.attrs.get("intervals", {}).get(name, {})
    control = name in frame.attrs.get("controls", {})
    return [_cell(row[col], col in na, ci.get(col), control) for col in frame.columns]


def _legend(frame: pd.DataFrame) -> str:
    text = f"{MISSING}: not run; {NOT_APPLICABLE}: not applicable to the objective (no text side, or no lesion masks)."
    if frame.attrs.get("intervals"):
        text += " [lo, hi]: 95 % bootstrap interval over test patients."
    if frame.attrs.get("controls"):
        text += (" Controls (grounding only, same test sentences and K): location prior = the top-K patches of the"
                 " region the sentence's words name (side, lobe, organ) on the anatomy maps, no image content;"
                 " content-shuffled = the model on another patient's patch features, positions kept."
                 " Grounding counts as image-based only where it beats the location prior.")
    return text


def _difference_lines(frame: pd.DataFrame) -> list[str]:
    rows, notes = frame.attrs.get("differences", []), frame.attrs.get("difference_notes", [])
    if not rows and not notes:
        return []
    pairs: dict[tuple, list[str]] = {}
    for r in rows:
        pairs.setdefault((r["a"], r["b"]), []).append(f"{r['column']} {format_interval(r, DECIMALS)}")
    lines = [f"{a} − {b}: " + ", ".join(parts) for (a, b), parts in pairs.items()]
    return lines + notes


def markdown_report(frame: pd.DataFrame, images: Sequence[tuple[str, str]], title: str = "") -> str:
    """The results table, a line of chance levels, then the images as (caption, relative link)."""
    lines = [f"# {title}", ""] if title else []
    if len(frame.columns):
        lines += ["| objective | " + " | ".join(frame.columns) + " |",
                  "|:---|" + "---:|" * len(frame.columns)]
        for name, row in frame.iterrows():
            lines.append(f"| {name} | " + " | ".join(_row_cells(frame, name, row)) + " |")
        lines += ["", _legend(frame)]
    else:
        lines.append("No downstream evaluation results found.")
    chance = frame.attrs.get("chance", {})
    if chance:
        levels = ", ".join(f"{col} {value:.{DECIMALS}f}" for col, value in chance.items())
        lines += ["", f"Chance levels: {levels}."]
    diffs = _difference_lines(frame)
    if diffs:
        lines += ["", "Differences (paired, same test sentences or volumes; 95 % patient-level bootstrap "
                  "interval):", ""]
        lines += [f"- {line}" for line in diffs]
    for caption, link in images:
        lines += ["", f"![{caption}]({link})"]
    return "\n".join(lines) + "\n"


def _html_page(title: str, body: list[str]) -> str:
    """A self-contained HTML page (inline style, no scripts, no links): Snakemake's report shows it as is."""
    head = (f'<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{PAGE_STYLE}</style></head>\n<body>\n")
    return head + (f"<h1>{html.escape(title)}</h1>\n" if title else "") + "\n".join(body) + "\n</body>\n</html>\n"


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1) -> str:
    """A table of already formatted cells; the first `text_columns` columns are left-aligned."""
    def cells(tag, values):
        return "".join(f'<{tag}{" class=text" if i < text_columns else ""}>{html.escape(str(v))}</{tag}>'
                       for i, v in enumerate(values))
    lines = ["<table>", f"<thead><tr>{cells('th', header)}</tr></thead>", "<tbody>"]
    lines += [f"<tr>{cells('td', row)}</tr>" for row in rows]
    return "\n".join(lines + ["</tbody>", "</table>"])


def html_report(frame: pd.DataFrame, title: str = "") -> str:
    """The results table of `markdown_report` (same cells, legend and chance levels) as an HTML page."""
    body = []
    if len(frame.columns):
        rows = [[name] + _row_cells(frame, name, row) for name, row in frame.iterrows()]
        body += [_html_table(["objective", *frame.columns], rows), f"<p>{html.escape(_legend(frame))}</p>"]
    else:
        body.append("<p>No downstream evaluation results found.</p>")
    chance = frame.attrs.get("chance", {})
    if chance:
        levels = ", ".join(f"{col} {value:.{DECIMALS}f}" for col, value in chance.items())
        body.append(f"<p>Chance levels: {html.escape(levels)}.</p>")
    diffs = _difference_lines(frame)
    if diffs:
        body += ["<h2>Differences</h2>",
                 "<p>Paired, same test sentences or volumes; 95 % patient-level bootstrap interval.</p>",
                 "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in diffs) + "</ul>"]
    return _html_page(title or "Results", body)


def heatmaps_report(pngs: Sequence[Path], title: str = "Grounding heat maps") -> str:
    """The heat map copies embedded (data URIs) in one page: their number varies, a page's name does not."""
    body = [f'<figure><img alt="grounding heat map {k}" src="data:image/png;base64,'
            f'{base64.b64encode(Path(png).read_bytes()).decode()}"><figcaption>{k}: {html.escape(Path(png).name)}'
            f"</figcaption></figure>" for k, png in enumerate(pngs, start=1)]
    return _html_page(title, body or ["<p>No grounding heat maps: no objective with a text side ran the "
                                      "grounding task, or it drew none.</p>"])


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


def benchmarks_report(table: pd.DataFrame, title: str = "") -> str:
    """Per-rule totals, then one row per job: wall time, peak memory, CPU time, I/O."""
    def fmt(value, decimals):
        if decimals is None:
            return MISSING if pd.isna(value) else str(value)
        number = _number(value)
        return MISSING if number is None else f"{number:,.{decimals}f}"

    title = title or "Runtime and memory per job"
    if not len(table):
        return _html_page(title, [f"<p>No benchmark files found under {_IN_RUN.benchmarks}/.</p>"])
    shown = [c for c in BENCHMARK_COLUMNS if c in table]
    numeric = table.reindex(columns=["s", "max_rss"]).apply(pd.to_numeric, errors="coerce")
    summary = [[rule, str(len(jobs)), fmt(jobs["s"].sum(min_count=1), 1), fmt(jobs["s"].max(), 1),
                fmt(jobs["max_rss"].max(), 0)]
               for rule, jobs in numeric.groupby(table["rule"], sort=True)]
    rows = [[row["rule"], row["job"], *(fmt(row[c], BENCHMARK_COLUMNS[c][1]) for c in shown)]
            for _, row in table.sort_values(["rule", "job"], kind="stable").iterrows()]
    body = ["<h2>Per rule</h2>",
            _html_table(["rule", "jobs", "total wall time (s)", "longest job (s)", "peak RSS (MiB)"], summary),
            "<h2>Per job</h2>",
            _html_table(["rule", "job", *(BENCHMARK_COLUMNS[c][0] for c in shown)], rows, text_columns=2),
            "<p>Measured by Snakemake's <code>benchmark:</code> directive (psutil, sampled while the job ran; "
            "RSS: resident memory of the job's processes).</p>"]
    return _html_page(title, body)


def _flat_metrics(frame: pd.DataFrame, collected: dict) -> dict:
    """{objective: {metrics.json key: number}} for `dvc metrics show`: the table's values plus the final
    pre-training losses and throughput ("pretrain/<term>"); missing values are dropped."""
    keys = frame.attrs.get("keys", {})
    flat = {name: {keys[col]: float(value) for col, value in row.items() if not math.isnan(value)}
            for name, row in frame.iterrows()}
    for name in flat:
        pretrain = collected["objectives"].get(name, {}).get("pretrain", {})
        values = {**pretrain.get("losses", {}), "samples_per_s": pretrain.get("samples_per_s")}
        flat[name].update({f"pretrain/{k}": float(v) for k, v in values.items() if _number(v) is not None})
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
