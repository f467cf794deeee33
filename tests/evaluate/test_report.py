"""Results report: a hand-written run of evaluation JSON files -> table, DVC files, figures, heat-map copies."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from simcrop import layout
from simcrop.evaluate.report import LOSS_CURVE_DIR, collect, results_table, write_report

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


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = layout.Run(tmp_path_factory.mktemp("run"))
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


@pytest.fixture(scope="module")
def report(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, write_report(run_dir, out, n_heatmaps=3, title="Test run")


def _md_table(text: str) -> dict[str, dict[str, str]]:
    """{objective: {column: cell}} from the Markdown table."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    header = split[0]
    return {row[0]: dict(zip(header[1:], row[1:])) for row in split[2:]}


def test_rows_are_ordered_baselines_first_then_ablations(report):
    _, results = report
    assert results["objectives"] == ["random", "mae", "clip", "simcrop", "abl_nocrop"]


def test_columns_are_grouped_by_task_dataset_and_fraction(report):
    _, results = report
    columns = results["columns"]
    assert columns[:5] == ["probe main AUROC 10%", "probe main AUROC 100%", "probe ccccii acc 100%",
                           "segment luna16 Dice 100%", "zero-shot AUROC"]
    assert columns[5:13] == [f"{k} {d}" for d in ("report→volume", "volume→report")
                             for k in ("R@1", "R@5", "R@10", "mAP")]
    assert columns[13:] == ["grounding hit", "hit ÷ chance", "pointing"]


def test_values_land_in_their_cells(report):
    _, results = report
    rows = results["rows"]
    assert rows["simcrop"]["probe main AUROC 10%"] == pytest.approx(0.71)
    assert rows["simcrop"]["probe main AUROC 100%"] == pytest.approx(0.80)
    assert rows["random"]["probe main AUROC 10%"] == pytest.approx(0.52)
    assert rows["mae"]["probe main AUROC 10%"] is None           # mae probed at 100% only
    assert rows["simcrop"]["probe ccccii acc 100%"] == pytest.approx(0.9)
    assert rows["simcrop"]["segment luna16 Dice 100%"] == pytest.approx(0.65)
    assert rows["simcrop"]["R@5 volume→report"] == pytest.approx(0.45)
    assert rows["simcrop"]["R@5 report→volume"] == pytest.approx(0.5)
    assert rows["clip"]["grounding hit"] == pytest.approx(0.1)
    assert rows["abl_nocrop"]["zero-shot AUROC"] == pytest.approx(0.61)
    assert rows["mae"]["zero-shot AUROC"] is None
    assert set(results["not_applicable"]) == {"mae"}
    assert "zero-shot AUROC" in results["not_applicable"]["mae"] and "pointing" in results["not_applicable"]["mae"]
    assert results["chance"] == pytest.approx({"grounding hit": 0.066, "pointing": 0.066,
                                               "R@1 report→volume": 0.04, "R@5 report→volume": 0.2,
                                               "R@10 report→volume": 0.4, "R@1 volume→report": 0.04,
                                               "R@5 volume→report": 0.2, "R@10 volume→report": 0.4})
    assert len(results["sources"]) == 17   # 2 pretrain, 7 probe/segment, 8 text-task files
    on_disk = json.loads((report[0] / "results.json").read_text())
    assert on_disk["rows"] == rows


def test_markdown_table_shows_values_na_and_missing(report):
    out, _ = report
    text = (out / "results.md").read_text(encoding="utf-8")
    table = _md_table(text)
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


def test_dvc_metrics_are_flat_and_numeric(report):
    out, _ = report
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"random", "mae", "clip", "simcrop", "abl_nocrop"}
    for values in metrics.values():
        assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values())
    assert metrics["simcrop"]["probe/main/100"] == pytest.approx(0.80)
    assert metrics["simcrop"]["probe/ccccii/100"] == pytest.approx(0.9)
    assert metrics["simcrop"]["segment/luna16/100"] == pytest.approx(0.65)
    assert metrics["simcrop"]["grounding/hit"] == pytest.approx(0.25)
    assert metrics["simcrop"]["retrieval/report_to_volume/recall@5"] == pytest.approx(0.5)
    # n/a tasks are dropped, not null; the final pre-training losses and throughput come along
    assert metrics["mae"] == {"probe/main/100": pytest.approx(0.6), "pretrain/loss": pytest.approx(0.8),
                              "pretrain/samples_per_s": pytest.approx(2.5)}
    assert metrics["simcrop"]["pretrain/loss"] == pytest.approx(5.0) and "pretrain/loss" not in metrics["random"]


def test_csvs_hold_one_row_per_fraction_and_per_loss_point(report):
    out, _ = report
    fractions = pd.read_csv(out / "fraction_curves.csv")
    assert list(fractions.columns) == ["objective", "dataset", "task", "metric", "fraction", "value"]
    assert len(fractions) == 7   # random 2, mae 1, simcrop 2 + ccccii 1 + segment 1
    row = fractions[(fractions.objective == "simcrop") & (fractions.dataset == "main") & (fractions.fraction == 0.1)]
    assert row[["task", "metric"]].values.tolist() == [["probe", "auroc"]] and row.value.item() == pytest.approx(0.71)
    seg = fractions[fractions.task == "segment"]
    assert seg[["objective", "dataset", "metric", "fraction"]].values.tolist() == [["simcrop", "luna16", "dice", 1.0]]
    losses = pd.read_csv(out / "loss_curves.csv")
    assert list(losses.columns) == ["objective", "term", "step", "value"]
    assert sorted(set(zip(losses.objective, losses.term))) == [("mae", "loss"), ("simcrop", "align"),
                                                               ("simcrop", "loss")]
    assert len(losses) == 2 + 3 + 3
    last = losses[(losses.objective == "simcrop") & (losses.term == "loss")].sort_values("step").iloc[-1]
    assert (last.step, last.value) == (30, pytest.approx(5.0))


def test_figures_are_png_and_heatmaps_prefer_simcrop(report, run_dir):
    out, results = report
    for name in ("fraction_curves.png", "loss_curves.png"):
        data = (out / "figures" / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000
    # simcrop's two figures first (one found by name next to its JSON), then clip's
    copies = [(out / "figures" / f"heatmap_{k}.png").read_bytes() for k in (1, 2, 3)]
    assert copies == [PNG_MAGIC + b"simcrop-a", PNG_MAGIC + b"simcrop-b", PNG_MAGIC + b"clip-c"]
    assert not (out / "figures" / "heatmap_4.png").exists()
    assert "figures/heatmap_3.png" in results["figures"]


def test_objectives_restrict_and_order_rows(run_dir, tmp_path):
    results = write_report(run_dir, tmp_path, objectives=["simcrop", "random"], n_heatmaps=1)
    assert results["objectives"] == ["simcrop", "random"]
    assert list(_md_table((tmp_path / "results.md").read_text(encoding="utf-8"))) == ["simcrop", "random"]
    assert "grounding hit" in results["columns"] and "mae" not in results["rows"]
    assert (tmp_path / "figures/heatmap_1.png").exists() and not (tmp_path / "figures/heatmap_2.png").exists()
    frame = results_table(collect(run_dir))
    assert frame.loc["random", "probe main AUROC 100%"] == pytest.approx(0.55)


def test_nothing_found_raises(tmp_path):
    layout.Run(tmp_path).evaluate_dir("simcrop").mkdir(parents=True)      # a row folder, no result in it
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        write_report(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


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


@pytest.fixture(scope="module")
def controls_report(tmp_path_factory):
    import numpy as np

    run, rng = layout.Run(tmp_path_factory.mktemp("controls_run")), np.random.default_rng(0)
    _json(run.evaluation("simcrop", "grounding"), _grounding_with_controls(rng))
    _json(run.evaluation("simcrop_batchneg", "grounding"), _grounding_with_controls(rng, hit_shift=0.05))
    _json(run.evaluation("mae", "grounding"), {"task": "grounding", **NOT_APPLICABLE})
    for name in ("simcrop", "mae"):
        _probe(run.evaluation(name, "probe", "main", "100"), {"100": 0.7})
    out = tmp_path_factory.mktemp("controls_report")
    return out, write_report(run.root, out, n_heatmaps=0)


def test_grounding_cells_show_intervals_and_controls_get_rows(controls_report):
    import re

    out, results = controls_report
    assert results["objectives"] == ["mae", "simcrop", "simcrop_batchneg"]
    table = _md_table((out / "results.md").read_text(encoding="utf-8"))
    assert list(table) == ["mae", "simcrop", "simcrop_batchneg", "location prior", "simcrop content-shuffled",
                           "simcrop_batchneg content-shuffled"]
    interval = re.compile(r"^-?\d+\.\d{3} \[-?\d+\.\d{3}, -?\d+\.\d{3}\]$")
    for row in ("simcrop", "location prior", "simcrop content-shuffled"):
        for column in ("grounding hit", "hit ÷ chance", "pointing"):
            assert interval.match(table[row][column]), (row, column, table[row][column])
    assert table["location prior"]["probe main AUROC 100%"] == ""          # controls: grounding cells only
    assert table["simcrop"]["probe main AUROC 100%"] == "0.700" and table["mae"]["grounding hit"] == "n/a"
    ci = results["intervals"]["simcrop"]["grounding hit"]
    assert ci["lo"] <= results["rows"]["simcrop"]["grounding hit"] <= ci["hi"]
    assert results["controls"]["location prior"] == {"control": "location_prior", "objective": "simcrop"}
    assert results["rows"]["location prior"]["grounding hit"] > results["rows"]["simcrop"]["grounding hit"]


def test_differences_block_has_intervals_and_says_what_is_missing(controls_report):
    out, results = controls_report
    text = (out / "results.md").read_text(encoding="utf-8")
    block = text[text.index("Differences"):]
    assert "- simcrop − location prior: grounding hit " in block and "- simcrop − content-shuffled: " in block
    assert "- simcrop − simcrop_batchneg: grounding hit " in block          # same sentences: paired across objectives
    assert "simcrop − mae, probe: no interval" in block and "simcrop − mae, grounding: no interval" in block
    prior = [r for r in results["differences"] if (r["a"], r["b"], r["column"]) ==
             ("simcrop", "location prior", "grounding hit")][0]
    assert prior["lo"] <= prior["value"] <= prior["hi"] < 0                # the prior beats this model
    shifted = [r for r in results["differences"] if (r["a"], r["b"], r["column"]) ==
               ("simcrop", "simcrop_batchneg", "grounding hit")][0]
    assert shifted["value"] < 0
    page = (out / "results.html").read_text(encoding="utf-8")
    assert "<h2>Differences</h2>" in page and "simcrop − location prior" in page


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


@pytest.fixture(scope="module")
def probe_ci_report(tmp_path_factory):
    run, tests = layout.Run(tmp_path_factory.mktemp("probe_ci_run")), {}
    for name, signal, seed in (("random", 0.0, 1), ("mae", 1.0, 2), ("simcrop", 2.5, 3)):
        tests[name] = _probe_with_volumes(run.evaluation(name, "probe", "main", "100"), "100", signal, seed)
        _probe(run.evaluation(name, "probe", "main", "10"), {"10": 0.6})         # an old file: no per-volume scores
        _probe_with_volumes(run.evaluation(name, "probe", "ccccii", "100"), "100", signal, seed, task="multiclass")
    out = tmp_path_factory.mktemp("probe_ci_report")
    return out, write_report(run.root, out, n_heatmaps=0), tests


def test_probe_cells_show_intervals_and_differences_are_paired(probe_ci_report):
    import re

    out, results, tests = probe_ci_report
    table = _md_table((out / "results.md").read_text(encoding="utf-8"))
    interval = re.compile(r"^\d+\.\d{3} \[\d+\.\d{3}, \d+\.\d{3}\]$")
    for name in ("random", "mae", "simcrop"):
        for column in ("probe main AUROC 100%", "probe ccccii acc 100%"):
            assert interval.match(table[name][column]), (name, column, table[name][column])
        assert table[name]["probe main AUROC 10%"] == "0.600"                   # no interval in the file: none shown
        ci = results["intervals"][name]["probe main AUROC 100%"]
        assert ci["lo"] < results["rows"][name]["probe main AUROC 100%"] < ci["hi"]
    diffs = {(r["a"], r["b"], r["column"]): r for r in results["differences"]}
    for base in ("mae", "random"):
        d = diffs[("simcrop", base, "probe main AUROC 100%")]
        want = tests["simcrop"]["mean_auroc"] - tests[base]["mean_auroc"]
        assert d["value"] == pytest.approx(want) and d["lo"] < d["value"] < d["hi"]
        assert ("simcrop", base, "probe ccccii acc 100%") in diffs
    assert diffs[("simcrop", "random", "probe main AUROC 100%")]["lo"] > 0         # a clear gain excludes 0
    mae_gain = diffs[("mae", "random", "probe main AUROC 100%")]                    # does MAE beat no pre-training?
    assert mae_gain["value"] == pytest.approx(tests["mae"]["mean_auroc"] - tests["random"]["mean_auroc"])
    assert not any(r["a"] == "random" for r in results["differences"])
    text = (out / "results.md").read_text(encoding="utf-8")
    block = text[text.index("Differences"):]
    assert "- simcrop − mae: probe main AUROC 100% " in block and "- simcrop − random: probe main AUROC 100% " in block
    assert "simcrop − mae, probe: no interval for probe main AUROC 10% — the probe JSONs hold no per-volume" in block
