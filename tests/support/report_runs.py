"""Hand-written runs of evaluation JSON files for the results-report tests (tests/evaluate/test_report.py,
test_results_*.py): what pre-training and each task leave under a run folder, without running them."""
from __future__ import annotations

import json
from pathlib import Path

from simcrop import layout
from simcrop.evaluate.results_collect import LOSS_CURVE_DIR

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NOT_APPLICABLE = {"applicable": False, "reason": "no text encoder", "checkpoint": None}


def _json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def _tsv(folder: Path, term: str, values: list[float]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["timestamp\tstep\t" + term] + [f"{1700000000 + i}\t{10 * (i + 1)}\t{v}" for i, v in enumerate(values)]
    (folder / f"{term}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _probe(path: Path, pct_scores: dict[str, float | None], task: str = "multilabel") -> None:
    fractions = {}
    for pct, score in pct_scores.items():
        test = ({"accuracy": score} if task == "multiclass" else
                {"mean_auroc": score, "auroc": {"Emphysema": score, "Nodule": None}, "n_classes_unscored": 1})
        fractions[pct] = {"fraction": float(pct) / 100, "n_train": int(pct), "n_train_patients": int(pct),
                          "best_epoch": 3, "val_metric": 0.5, "test": test}
    _json(path, {"task": task, "protocol": "holdout", "encoder": "x.pt", "label_names": ["Emphysema", "Nodule"],
                 "n": {"train": 100, "val": 10, "test": 10}, "fractions": fractions})


def _png(path: Path, tag: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PNG_MAGIC + tag)
    return path


def build_results_run(root: Path) -> Path:
    """Every part a run can hold: pre-training metrics and loss curves of two objectives, probes, a
    segmentation, the text tasks (n/a for mae), grounding figures, an ablation row. Returns the run folder."""
    run = layout.Run(root)
    # pre-training: two objectives with dvclive curves; lr is not a loss
    for name, loss in (("simcrop", [9.0, 7.0, 5.0]), ("mae", [1.0, 0.8])):
        _json(run.pretrain_metrics(name), {"step": 30, "samples_per_s": 2.5, "losses": {"loss": loss[-1]},
                                           "first_losses": {"loss": loss[0]}})
        curves = run.pretrain_dir(name) / LOSS_CURVE_DIR
        _tsv(curves, "loss", loss)
        _tsv(curves, "lr", [1e-4] * len(loss))
    _tsv(run.pretrain_dir("simcrop") / LOSS_CURVE_DIR, "align", [4.0, 3.0, 2.0])
    # probes: main at two fractions (one file each), a multiclass downstream set
    for name, (s10, s100) in {"random": (0.52, 0.55), "simcrop": (0.71, 0.80)}.items():
        _probe(run.evaluation(name, "probe", "main", "10"), {"10": s10})
        _probe(run.evaluation(name, "probe", "main", "100"), {"100": s100})
    # a file may hold other fractions too: the file named after a fraction wins it (10.json's 0.71, not 0.0)
    _probe(run.evaluation("simcrop", "probe", "main", "100"), {"10": 0.0, "100": 0.80})
    _probe(run.evaluation("mae", "probe", "main", "100"), {"100": 0.6})
    _probe(run.evaluation("simcrop", "probe", "ccccii", "100"), {"100": 0.9}, task="multiclass")
    _json(run.evaluation("simcrop", "segment", "luna16", "100"), {
        "label_map": "organ", "classes": ["lung", "airway"],
        "fractions": {"100": {"fraction": 1.0, "n_train": 8, "best_step": 100, "val_mean_dice": 0.6,
                              "history": [[100, 0.6, 0.4]],
                              "test": {"mean_dice": 0.65, "dice": {"lung": 0.65, "airway": None}, "n_volumes": 2}}}})
    # text tasks: simcrop does them all, mae cannot (no text side), clip grounds with one figure
    _json(run.evaluation("simcrop", "zeroshot"), {"task": "zeroshot", "applicable": True, "mean_auroc": 0.68,
                                                  "auroc": {"Emphysema": 0.68}})
    direction = {"recall@1": 0.2, "recall@5": 0.5, "recall@10": 0.7, "map": 0.3,
                 "chance_recall@1": 0.04, "chance_recall@5": 0.2, "chance_recall@10": 0.4}
    _json(run.evaluation("simcrop", "retrieval"), {"task": "retrieval", "applicable": True,
                                                   "report_to_volume": direction,
                                                   "volume_to_report": {**direction, "recall@5": 0.45}})
    figures = layout.figures_beside(run.evaluation("simcrop", "grounding"))
    first = _png(figures / "a.png", b"simcrop-a")
    _png(figures / "b.png", b"simcrop-b")
    grounding = {"task": "grounding", "applicable": True, "n_sentences": 20, "hit_fraction": 0.25,
                 "hit_fraction_chance": 0.066, "hit_ratio_to_chance": 3.79, "pointing_game": 0.3,
                 "pointing_chance": 0.066}
    # one path as the job wrote it (relative to another working directory): found by name
    _json(run.evaluation("simcrop", "grounding"),
          {**grounding, "figures": [str(first), "elsewhere/grounding_figures/b.png"]})
    clip_figure = _png(layout.figures_beside(run.evaluation("clip", "grounding")) / "c.png", b"clip-c")
    _json(run.evaluation("clip", "grounding"), {**grounding, "hit_fraction": 0.1, "figures": [str(clip_figure)]})
    for task in ("zeroshot", "retrieval", "grounding"):
        _json(run.evaluation("mae", task), {"task": task, **NOT_APPLICABLE})
    _json(run.evaluation("abl_nocrop", "zeroshot"), {"task": "zeroshot", "applicable": True, "mean_auroc": 0.61})
    return run.root


def md_table(text: str) -> dict[str, dict[str, str]]:
    """{objective: {column: cell}} from the Markdown table."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    header = split[0]
    return {row[0]: dict(zip(header[1:], row[1:])) for row in split[2:]}


def _grounding_with_controls(rng, hit_shift: float = 0.0) -> dict:
    """A grounding.json as evaluate_grounding writes it: per-sentence scores, controls and intervals."""
    from simcrop.evaluate.grounding import bootstrap_grounding, summarize
    import numpy as np
    import torch

    patients = [f"p{i // 3}" for i in range(24)]
    chance = rng.uniform(0.05, 0.15, 24)
    scores = {name: {"hit": np.clip(chance * m + hit_shift, 0, 1).round(3).tolist(),
                     "pointing": (rng.random(24) < chance * m).astype(float).tolist()}
              for name, m in (("model", 2.0), ("location_prior", 3.0), ("content_shuffled", 1.0))}
    per = {"patient_id": patients, "volume_id": [f"v{i // 2}" for i in range(24)], "chance": chance.tolist(),
           "oracle": [1.0] * 24, **scores}
    boot = bootstrap_grounding(per, n_boot=200)

    def flat(name):
        return summarize({"hit": torch.tensor(per[name]["hit"]), "pointing": torch.tensor(per[name]["pointing"]),
                          "chance": torch.tensor(chance), "oracle": torch.ones(24), "lesion_patches": torch.ones(24)})

    controls = {name: {**{k: flat(name)[k] for k in ("hit_fraction", "hit_ratio_to_chance", "pointing_game",
                                                       "pointing_ratio_to_chance")}, "intervals": boot[name]}
                for name in ("location_prior", "content_shuffled")}
    return {"task": "grounding", "applicable": True, **flat("model"), **controls, "intervals": boot["intervals"],
            "differences": boot["differences"], "bootstrap": boot["bootstrap"], "per_sentence": per, "figures": []}


def build_controls_run(root: Path) -> Path:
    """Grounding files with controls and per-sentence scores (simcrop, simcrop_batchneg; mae n/a) and a probe
    of simcrop and mae without per-volume scores. Returns the run folder."""
    import numpy as np

    run, rng = layout.Run(root), np.random.default_rng(0)
    _json(run.evaluation("simcrop", "grounding"), _grounding_with_controls(rng))
    _json(run.evaluation("simcrop_batchneg", "grounding"), _grounding_with_controls(rng, hit_shift=0.05))
    _json(run.evaluation("mae", "grounding"), {"task": "grounding", **NOT_APPLICABLE})
    for name in ("simcrop", "mae"):
        _probe(run.evaluation(name, "probe", "main", "100"), {"100": 0.7})
    return run.root


def _probe_with_volumes(path: Path, pct: str, signal: float, seed: int, n_patients: int = 30,
                        task: str = "multilabel") -> dict:
    """A probe JSON as evaluate_probe writes it: per-volume test scores (two volumes per patient, the same
    volumes, patients and labels in every file) and the interval; `signal` scales how well scores rank."""
    import numpy as np
    import torch

    from simcrop.evaluate.probe import per_volume_record, probabilities, probe_metrics

    labels = (np.random.default_rng(0).random((2 * n_patients, 2)) < 0.4).astype(np.float32)
    if task == "multiclass":
        labels = np.eye(3, dtype=np.float32)[np.random.default_rng(0).integers(0, 3, 2 * n_patients)]
    logits = torch.from_numpy(signal * labels + np.random.default_rng(seed).normal(0, 1, labels.shape)).float()
    vids = [f"v{i}" for i in range(2 * n_patients)]
    pids = [f"p{i // 2}" for i in range(2 * n_patients)]
    names = [f"c{k}" for k in range(labels.shape[1])]
    y = torch.from_numpy(labels).argmax(1) if task == "multiclass" else torch.from_numpy(labels)
    test = probe_metrics(logits, y, task, names)
    test["per_volume"], test["intervals"] = per_volume_record(vids, pids, labels, logits, task, n_boot=300)
    assert probabilities(logits, task).shape == labels.shape
    _json(path, {"task": task, "protocol": "holdout", "label_names": names, "view": "tiles",
                 "fractions": {pct: {"fraction": float(pct) / 100, "n_train": 5, "test": test}}})
    return test


def build_probe_ci_run(root: Path) -> tuple[Path, dict]:
    """Probes of random, mae and simcrop with per-volume test scores (main and ccccii at 100 %) and an old
    file without them (main at 10 %). Returns the run folder and each row's main test metrics."""
    run, tests = layout.Run(root), {}
    for name, signal, seed in (("random", 0.0, 1), ("mae", 1.0, 2), ("simcrop", 2.5, 3)):
        tests[name] = _probe_with_volumes(run.evaluation(name, "probe", "main", "100"), "100", signal, seed)
        _probe(run.evaluation(name, "probe", "main", "10"), {"10": 0.6})         # an old file: no per-volume scores
        _probe_with_volumes(run.evaluation(name, "probe", "ccccii", "100"), "100", signal, seed, task="multiclass")
    return run.root, tests
