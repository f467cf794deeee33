"""The results table of one run: one row per objective (then one per grounding control), one float column
per metric, NaN where missing or not applicable; and the long tables behind the fraction and loss curves.

Column names: "probe <dataset> AUROC|acc <pct>%", "segment <dataset> Dice <pct>%", "zero-shot AUROC",
"R@1|R@5|R@10|mAP report→volume|volume→report", "grounding hit", "hit ÷ chance", "pointing".

Grounding and probe cells get an interval (frame.attrs["intervals"]) where the file carries a 95 %
patient-level bootstrap interval (grounding.json "intervals"; a probe fraction's "test" "intervals").
Grounding's controls get rows of their own under the objectives, with grounding cells only: "location
prior" (the sentence's location words on the anatomy maps, no image; from HEATMAP_OBJECTIVE's file, else
the first) and "<objective> content-shuffled" (that model on another patient's patch features, positions
kept).
"""
from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from simcrop.evaluate.metrics import MEAN_AUROC
from simcrop.evaluate.results_collect import (FRACTION_METRICS, FRACTION_TASKS, HEATMAP_OBJECTIVE, MAIN_DATASET,
                                              TEXT_TASKS, finite_number, lookup_interval, lookup_number, pct_order)

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

# grounding.json control -> row label ("{objective}" filled for per-model controls)
GROUNDING_CONTROLS = {"location_prior": "location prior", "content_shuffled": "{objective} content-shuffled"}


def fraction_column(task: str, dataset: str, entry: dict, pct: str) -> str:
    """The table's column label of a probe/segment fraction entry."""
    return f"{task} {dataset} {FRACTION_METRICS[entry['kind']][2]} {pct}%"


def _fraction_cells(parts: dict) -> list[dict]:
    cells = []
    for rank, task in enumerate(FRACTION_TASKS):
        for dataset, entries in parts.get(task, {}).items():
            for pct, entry in entries.items():
                test_key, _, label = FRACTION_METRICS[entry["kind"]]
                cells.append({"column": fraction_column(task, dataset, entry, pct), "key": f"{task}/{dataset}/{pct}",
                              "value": lookup_number(entry, ("test", test_key)), "applicable": True, "chance": None,
                              "interval": lookup_interval((entry.get("test") or {}).get("intervals"), (test_key,)),
                              "order": (rank, int(dataset != MAIN_DATASET), dataset, label, pct_order(pct))})
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
                          "value": lookup_number(metrics, path) if applicable else None,
                          "chance": lookup_number(metrics, chance_path) if applicable else None,
                          "interval": lookup_interval(metrics.get("intervals"), path) if applicable else None,
                          "order": (rank, 0, "", "", float(i))})
    return cells


def grounding_main(found: dict, names: Sequence[str]) -> str | None:
    """The objective whose grounding file supplies the shared controls: HEATMAP_OBJECTIVE first."""
    with_controls = [n for n in names if isinstance(found.get(n, {}).get("grounding", {}).get("location_prior"), dict)
                     and finite_number(found[n]["grounding"]["location_prior"].get("hit_fraction")) is not None]
    return HEATMAP_OBJECTIVE if HEATMAP_OBJECTIVE in with_controls else (with_controls[0] if with_controls else None)


def _control_cells(found: dict, names: Sequence[str]) -> list[tuple[str, dict, list[dict]]]:
    """(row label, {"control", "objective"}, grounding cells) of the controls in the grounding files."""
    rows = []
    main = grounding_main(found, names)
    for name in names:
        metrics = found.get(name, {}).get("grounding", {})
        for control, label in GROUNDING_CONTROLS.items():
            data = metrics.get(control)
            if control == "location_prior" and name != main:
                continue                                 # the same words and maps: shown once
            if not isinstance(data, dict) or finite_number(data.get("hit_fraction")) is None:
                continue
            cells = [{"column": col, "key": key, "applicable": True, "value": lookup_number(data, path),
                      "chance": None, "interval": lookup_interval(data.get("intervals"), path)}
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
                    value = lookup_number(entry, ("test", test_key))
                    fraction = finite_number(entry.get("fraction"))
                    if value is not None:
                        rows.append({"objective": name, "dataset": dataset, "task": task, "metric": metric,
                                     "fraction": fraction if fraction is not None else pct_order(pct) / 100,
                                     "value": value})
    return pd.DataFrame(rows, columns=["objective", "dataset", "task", "metric", "fraction", "value"])


def loss_curves(collected: dict, objectives: Sequence[str]) -> pd.DataFrame:
    """Long table objective, term, step, value from the dvclive TSVs."""
    rows = [{"objective": name, "term": term, "step": step, "value": value}
            for name in objectives
            for term, points in collected["objectives"].get(name, {}).get("loss_curves", {}).items()
            for step, value in points]
    return pd.DataFrame(rows, columns=["objective", "term", "step", "value"])
