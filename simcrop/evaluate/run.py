"""One entry point per downstream task for the CLI and Snakemake: each writes one metrics JSON.

    evaluate_zeroshot(cfg, checkpoint, run_dir, out_json, **options)
    evaluate_retrieval(cfg, checkpoint, run_dir, out_json, **options)
    evaluate_grounding(cfg, checkpoint, run_dir, out_json, **options)

`run_task` calls one of them and turns a model that cannot do the task (`NotApplicableError`, e.g. the
MAE baseline has no text side) into a metrics file that says so, so a results table gets a
"not applicable" row instead of a failed rule.
"""
from __future__ import annotations

import logging
from pathlib import Path

from simcrop.evaluate.embed import NotApplicableError
from simcrop.evaluate.grounding import evaluate_grounding
from simcrop.evaluate.retrieval import evaluate_retrieval
from simcrop.evaluate.zeroshot import evaluate_zeroshot
from simcrop.io import write_json_atomic

log = logging.getLogger(__name__)

TASKS = {"zeroshot": evaluate_zeroshot, "retrieval": evaluate_retrieval, "grounding": evaluate_grounding}


def not_applicable(task: str, reason: str, checkpoint=None) -> dict:
    """The metrics file of a task the model cannot do."""
    return {"task": task, "applicable": False, "reason": reason,
            "checkpoint": str(checkpoint) if checkpoint is not None else None}


def run_task(task: str, cfg, checkpoint, run_dir, out_json, **options) -> dict:
    """Run `task` ('zeroshot' | 'retrieval' | 'grounding'); options go to its evaluate_* function."""
    if task not in TASKS:
        raise ValueError(f"unknown evaluation task {task!r}; expected one of {sorted(TASKS)}")
    try:
        return TASKS[task](cfg, checkpoint, run_dir, out_json, **options)
    except NotApplicableError as err:
        log.warning("%s not applicable to %s: %s", task, checkpoint, err)
        metrics = not_applicable(task, str(err), checkpoint)
        write_json_atomic(Path(out_json), metrics)
        return metrics
