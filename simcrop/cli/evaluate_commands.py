"""Handlers of the evaluation sub-commands: zeroshot, retrieve, ground, heatmap, probe, segment and report.
Each picks the checkpoint or encoder and the output path from the config and makes one call into
simcrop.evaluate; the heavy modules are imported inside each handler."""
from __future__ import annotations

import sys
from pathlib import Path

from simcrop import layout

from .common import load_config, log


def _evaluate(task: str, args) -> int:
    from simcrop.evaluate.run import run_task

    cfg = load_config(args)
    ev = cfg.evaluate
    run = layout.run_of(cfg)
    checkpoint = Path(args.checkpoint or run.checkpoint(cfg.model.objective))
    out = Path(args.out or run.evaluation(cfg.model.objective, task))
    options = dict(split=ev.split, topk=ev.topk or None, batch_size=ev.batch_size, progress=not args.quiet)
    if task == "zeroshot":
        options.update(positive_template=ev.positive_template, negative_template=ev.negative_template)
    if task == "grounding":
        options.update(n_figures=ev.n_figures)
    metrics = run_task(task, cfg, checkpoint, cfg.run_dir, out, **options)
    log.info("%s → %s: %s", task, out, {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))})
    return 0


def cmd_zeroshot(args) -> int:
    return _evaluate("zeroshot", args)


def cmd_retrieve(args) -> int:
    return _evaluate("retrieval", args)


def cmd_ground(args) -> int:
    return _evaluate("grounding", args)


def cmd_heatmap(args) -> int:
    from simcrop.evaluate.volume_heatmap import volume_heatmaps

    cfg = load_config(args)
    checkpoint = Path(args.checkpoint or layout.run_of(cfg).checkpoint(cfg.model.objective))
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    results = volume_heatmaps(checkpoint, args.volume, args.text, Path(args.out_dir), cfg.preprocess,
                              mask=args.mask, preprocessed=args.preprocessed, device=device)
    for r in results:
        x, y, z = r["best_ras_mm"]
        i, j, k = r["best_input_voxel"]
        print(f"{r['text']!r}: best patch cosine {r['cosine_best']:.3f} (map {r['cosine_min']:.3f} to "
              f"{r['cosine_max']:.3f}) at RAS ({x:.1f}, {y:.1f}, {z:.1f}) mm = input voxel ({i}, {j}, {k})\n"
              f"  {r['png']}\n  {r['nifti']}")
    return 0


def _encoder(cfg, args):
    if args.encoder:
        return None if args.encoder == layout.RANDOM else Path(args.encoder)
    path = layout.encoder_of(cfg, args.objective)
    if path is not None and not path.exists():
        raise FileNotFoundError(f"{path}: no encoder for objective {args.objective!r}; run `simcrop pretrain` "
                                "with that model.objective first, or pass --encoder PATH (or 'random')")
    return path


def _row_name(args) -> str:
    """The results-table row a probe/segment run belongs to: the objective, or the --encoder file's stem."""
    if not args.encoder:
        return args.objective
    return args.encoder if args.encoder == layout.RANDOM else Path(args.encoder).stem


def _fractions(args, default):
    return [args.fraction] if args.fraction is not None else list(default)


def cmd_probe(args) -> int:
    from simcrop.evaluate import targets
    from simcrop.evaluate.probe import evaluate_probe

    cfg = load_config(args)
    pc = cfg.probe
    data = Path(args.data_dir or layout.data_dir(cfg, args.dataset))
    fractions = [] if args.features_only else _fractions(args, pc.fractions)
    name = layout.FEATURES if args.features_only else (layout.percent(args.fraction) if args.fraction else "all")
    out = Path(args.out or layout.run_of(cfg).evaluation(_row_name(args), "probe", args.dataset, name))
    metrics = evaluate_probe(cfg, _encoder(cfg, args), data, out, fractions=fractions, progress=not args.quiet,
                             **targets.probe_settings(cfg, args.dataset))
    log.info("probe %s on %s → %s: %s", args.objective, args.dataset, out,
             {f: r["test"] for f, r in metrics["fractions"].items()} or f"{metrics['n']} volumes' features")
    return 0


def cmd_segment(args) -> int:
    from simcrop.evaluate import targets
    from simcrop.evaluate.segment import evaluate_segmentation

    cfg = load_config(args)
    sc = cfg.segment
    data = Path(args.data_dir or layout.data_dir(cfg, args.dataset))
    name = layout.percent(args.fraction) if args.fraction else "all"
    out = Path(args.out or layout.run_of(cfg).evaluation(_row_name(args), "segment", args.dataset, name))
    metrics = evaluate_segmentation(cfg, _encoder(cfg, args), data, out, fractions=_fractions(args, sc.fractions),
                                    progress=not args.quiet, **targets.segment_settings(cfg, args.dataset))
    log.info("segmentation %s on %s → %s: %s", args.objective, args.dataset, out,
             {f: r["test"]["mean_dice"] for f, r in metrics["fractions"].items()})
    return 0


def cmd_report(args) -> int:
    from simcrop.evaluate.report import write_report

    cfg = load_config(args)
    run_dir = Path(args.run_dir or cfg.run_dir)
    out_dir = Path(args.out_dir or layout.Run(run_dir).report)
    results = write_report(run_dir, out_dir, objectives=cfg.experiment.objectives,
                           n_heatmaps=cfg.experiment.n_heatmaps, title=f"SimCroP results: run {cfg.run}")
    log.info("results table (%d objectives, %d columns) in %s", len(results["objectives"]), len(results["columns"]),
             out_dir / "results.md")
    if args.print:
        sys.stdout.write((out_dir / "results.md").read_text())
    return 0
