"""Paired differences with 95 % patient-level bootstrap intervals, for the "Differences" block under the
results table, and notes on what has none and why.

Each patch-feature objective minus the location prior and minus its content-shuffled control (from its
grounding.json), the main objective minus the other objectives scored on the same sentences, and, for the
linear probe, SimCroP − MAE and SimCroP − random (PROBE_BASELINES) per dataset and fraction: mean AUROC
(accuracy for multiclass) recomputed from the probe JSONs' per-volume test scores on the same test volumes
and the same patient resamples (or a note on why there is none: files without per-volume scores, different
test volumes).
"""
from __future__ import annotations

from typing import Sequence

from simcrop.evaluate.bootstrap import N_BOOT, ClusterBootstrap
from simcrop.evaluate.results_collect import MAIN_DATASET, finite_number, lookup_interval, pct_order
from simcrop.evaluate.results_table import GROUNDING_CONTROLS, fraction_column, grounding_main

PROBE_BASELINES = ("mae", "random")     # probe differences: every other pre-trained row − each baseline
NOT_COMPARED = ("supervised",)            # the probe's upper bound, not a method: no difference rows
GROUNDING_DIFFERENCE_COLUMNS = {"hit_fraction": "grounding hit", "pointing_game": "pointing",
                                "hit_ratio_to_chance": "hit ÷ chance"}


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
                ci = lookup_interval(diff, (key,)) if isinstance(diff, dict) else None
                if ci is not None:
                    rows.append({"a": name, "b": label.format(objective=name).replace(f"{name} ", ""),
                                 "column": column, **ci})
    main = grounding_main(found, names)
    per_main = found.get(main, {}).get("grounding", {}).get("per_sentence") if main else None
    for name in names:
        per = found.get(name, {}).get("grounding", {}).get("per_sentence")
        if name == main or not _per_sentence_match(per_main, per):
            continue
        joint = {**per_main, "model": per_main["model"], "location_prior": per["model"], "content_shuffled": None}
        boot = bootstrap_grounding(joint)["differences"]["model_minus_location_prior"]
        rows += [{"a": main, "b": name, "column": column, **lookup_interval(boot, (key,))}
                 for key, column in GROUNDING_DIFFERENCE_COLUMNS.items() if lookup_interval(boot, (key,))]
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
        for pct, entry in sorted(main[dataset].items(), key=lambda item: pct_order(item[0])):
            if pct not in other.get(dataset, {}):
                continue
            column = fraction_column("probe", dataset, entry, pct)
            diff = _paired_probe(entry, other[dataset][pct])
            if isinstance(diff, str):
                missing.setdefault(diff, []).append(column)
            elif finite_number(diff["value"]) is not None:
                rows.append({"column": column, **{k: finite_number(diff[k]) for k in ("value", "lo", "hi")}})
    return rows, missing
