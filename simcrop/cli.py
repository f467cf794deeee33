"""`simcrop` command line: one sub-command per pipeline step.

Every sub-command reads the same config tree (`--config` YAML files, merged in order, then `--set-json`
overrides, which is how Snakemake rules pass the sections they use), writes its outputs atomically and
can be run by hand with the arguments a rule uses. Heavy imports happen inside each command so `--help`
stays instant.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from simcrop import config as config_mod
from simcrop import layout

log = logging.getLogger("simcrop")


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="config file(s), merged in order over config/config.yaml, the same base "
                             "Snakemake reads, so a step run by hand trains what the workflow trains")
    parser.add_argument("--set-json", action="append", default=[], metavar="JSON",
                        help="JSON mapping merged over the config files (used by the Snakemake rules)")


def _config(args) -> config_mod.Config:
    """config/config.yaml (Snakemake's `configfile`), then --config overlays, then --set-json."""
    return config_mod.load([config_mod.DEFAULT_CONFIG_PATH, *args.config], args.set_json)


def _write_resolved(cfg: config_mod.Config, path: Path) -> None:
    from simcrop.io import write_text_atomic

    write_text_atomic(path, config_mod.dump(cfg))


def cmd_config(args) -> int:
    cfg = _config(args)
    text = config_mod.dump(cfg)
    if args.out:
        _write_resolved(cfg, Path(args.out))
    else:
        sys.stdout.write(text)
    return 0


def cmd_synthesize(args) -> int:
    from simcrop.data.synthetic import generate_corpus

    cfg = _config(args)
    root = Path(args.out or cfg.data.root)
    summary = generate_corpus(root, cfg.synthesize, progress=not args.quiet)
    if cfg.synthesize.downstream_samples:
        from simcrop.data.synthetic.downstream import write_downstream_samples

        summary["downstream"] = write_downstream_samples(root / "downstream", cfg.synthesize.seed,
                                                         cfg.synthesize.downstream_cases)
    _write_resolved(cfg, root / "synthesize.config.yaml")
    log.info("synthetic corpus in %s: %s", root, summary)
    return 0


def cmd_ingest(args) -> int:
    from simcrop.data.ingest import ingest

    cfg = _config(args)
    manifest = Path(args.manifest or layout.run_of(cfg).manifest)
    beside = layout.DataDir(manifest.parent)          # the report and resolved config go next to the manifest
    report = Path(args.report or beside.ingest_report)
    summary = ingest(cfg.data, manifest, report)
    _write_resolved(cfg, beside.resolved_config("ingest"))
    log.info("manifest %s: %s", manifest, summary)
    return 0


def cmd_preprocess(args) -> int:
    from simcrop.data.preprocess import preprocess_shard

    cfg = _config(args)
    run = layout.run_of(cfg)
    out_dir = Path(args.out_dir or run.preprocessed)
    manifest = Path(args.manifest or run.manifest)
    summary = preprocess_shard(manifest, args.shard, out_dir, cfg.preprocess, progress=not args.quiet)
    log.info("shard %d: %s", args.shard, summary)
    return 0


def cmd_gather(args) -> int:
    from simcrop.data.preprocess import gather_shards

    cfg = _config(args)
    out = layout.DataDir(args.out_dir or cfg.run_dir)
    qc_files = [Path(p) for p in args.shards] if args.shards else out.preprocessed.shard_qc_files()
    quarantine_files = [layout.Preprocessed.quarantine_of(p) for p in qc_files]
    gather_shards(qc_files, quarantine_files, out.qc, out.quarantine, out.preprocess_summary,
                  cfg.preprocess.max_bad_fraction)
    _write_resolved(cfg, out.resolved_config("preprocess"))
    return 0


def cmd_sentences(args) -> int:
    from simcrop.text.sentences import sentences_for_manifest

    cfg = _config(args)
    run = layout.run_of(cfg)
    manifest = Path(args.manifest or run.manifest)
    out = Path(args.out or run.sentences)
    quarantine = Path(args.quarantine or layout.DataDir(out.parent).sentences_quarantine)
    summary = sentences_for_manifest(manifest, out, cfg.sentences, quarantine)
    log.info("sentences %s: %s", out, summary)
    return 0


def cmd_show(args) -> int:
    from simcrop.evaluate.montage import write_montage

    cfg = _config(args)
    run = layout.run_of(cfg)
    out = Path(args.out or run.montage)
    write_montage(manifest=Path(args.manifest or run.manifest),
                  sentences=Path(args.sentences or run.sentences),
                  preprocessed=Path(args.preprocessed or run.preprocessed),
                  out=out, n_cases=cfg.show.n_cases)
    log.info("montage written to %s", out)
    return 0


def cmd_pretrain(args) -> int:
    from simcrop.train.pretrain import pretrain

    cfg = _config(args)
    if args.init:
        cfg.pretrain.init = args.init
    out_dir = Path(args.out_dir or layout.run_of(cfg).pretrain_dir(cfg.model.objective))
    summary = pretrain(cfg, cfg.run_dir, out_dir, max_steps=args.max_steps, progress=not args.quiet,
                       device=args.device, on_change=args.on_change)
    log.info("pre-training %s: %s", out_dir, summary)
    return 0


def cmd_export(args) -> int:
    from simcrop.train.export import export_encoder

    out = export_encoder(Path(args.checkpoint), Path(args.out))
    log.info("encoder weights (official key names, {'model': ...}) written to %s", out)
    return 0


def cmd_export_volume(args) -> int:
    from simcrop.data.preprocessed_io import export_nifti

    try:
        out = export_nifti(Path(args.volume), Path(args.out))
    except ValueError as err:                 # not a preprocessed file, unreadable, not RAS: one line
        log.error("%s", err)
        return 1
    log.info("%s written as NIfTI (its affine, RAS) to %s", args.volume, out)
    return 0


def _evaluate(task: str, args) -> int:
    from simcrop.evaluate.run import run_task

    cfg = _config(args)
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

    cfg = _config(args)
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


def cmd_prepare(args) -> int:
    from simcrop.data.prepare import prepare_dataset
    from simcrop.evaluate import targets

    cfg = _config(args)
    out_dir = Path(args.out_dir or layout.data_dir(cfg, args.dataset))
    summary = prepare_dataset(targets.downstream_data_config(cfg, args.dataset), cfg.preprocess, out_dir,
                              progress=not args.quiet)
    _write_resolved(cfg, layout.DataDir(out_dir).resolved_config("prepare"))
    log.info("downstream set %s prepared in %s: %s", args.dataset, out_dir, summary)
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

    cfg = _config(args)
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

    cfg = _config(args)
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

    cfg = _config(args)
    run_dir = Path(args.run_dir or cfg.run_dir)
    out_dir = Path(args.out_dir or layout.Run(run_dir).report)
    results = write_report(run_dir, out_dir, objectives=cfg.experiment.objectives,
                           n_heatmaps=cfg.experiment.n_heatmaps, title=f"SimCroP results: run {cfg.run}")
    log.info("results table (%d objectives, %d columns) in %s", len(results["objectives"]), len(results["columns"]),
             out_dir / "results.md")
    if args.print:
        sys.stdout.write((out_dir / "results.md").read_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simcrop",
        description="SimCroP pipeline for 3D chest CT + reports. Each sub-command is one workflow step; "
                    "`snakemake --cores N` runs them in order (see README).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, func, help_text, description=None):
        p = sub.add_parser(name, help=help_text, description=description or help_text)
        _add_config_args(p)
        p.set_defaults(func=func)
        return p

    p = add("config", cmd_config, "print (or --out write) the resolved config after merging and validation")
    p.add_argument("--out", help="write the resolved YAML here instead of stdout")

    p = add("synthesize", cmd_synthesize, "generate the synthetic CT-RATE-style corpus",
            "Generate the embedded default corpus: thorax phantoms in HU with planted findings, reports, "
            "CT-RATE v2 tree and CSVs, lesion masks, organ maps and a sentence-to-lesion map. "
            "Deterministic from synthesize.seed.")
    p.add_argument("--out", help="corpus root (default: data.root)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("ingest", cmd_ingest, "read a dataset (data.dataset) into one manifest with patient-level splits",
            "Run the dataset adapter named by data.dataset (synthetic, ctrate, folder, manifest) over data.root "
            "and write manifest.csv plus ingest_report.json (counts of excluded/skipped volumes, release used).")
    p.add_argument("--manifest", help="output manifest (default: <results_dir>/<run>/manifest.csv)")
    p.add_argument("--report", help="output JSON report (default: next to the manifest)")

    p = add("preprocess", cmd_preprocess, "preprocess one shard of the manifest (RAS, spacing, HU window, int16)",
            "Reorient to RAS, resample to preprocess.spacing, clip to preprocess.hu_window and write int16 "
            "(preprocess.format: the .b2nd training cache, or NIfTI) + a QC record per volume for manifest "
            "rows [shard*shard_size, (shard+1)*shard_size). Bad volumes are quarantined with the reason; the shard goes on.")
    p.add_argument("--shard", type=int, required=True, help="shard index (0-based)")
    p.add_argument("--manifest", help="manifest CSV (default: <run_dir>/manifest.csv)")
    p.add_argument("--out-dir", help="output folder (default: <run_dir>/preprocessed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("gather", cmd_gather, "merge per-shard QC and quarantine lists; fail past max_bad_fraction")
    p.add_argument("shards", nargs="*", metavar="SHARD_QC",
                   help="<shard>.qc.csv files (default: all under <run_dir>/preprocessed/shards)")
    p.add_argument("--out-dir", help="where qc.csv, quarantine.csv, preprocess_summary.json go (default: run_dir)")

    p = add("sentences", cmd_sentences, "split report sections into sentences with spaCy (offsets kept)")
    p.add_argument("--manifest", help="manifest CSV (default: <run_dir>/manifest.csv)")
    p.add_argument("--out", help="output JSON lines (default: <run_dir>/sentences.jsonl)")
    p.add_argument("--quarantine", help="reports with no usable Findings (default: next to --out)")

    p = add("pretrain", cmd_pretrain, "pre-train the vision encoder (model.objective: simcrop, mae, clip, ...)",
            "Pre-train on the preprocessed train split with the objective in model.objective. Resumes "
            "automatically from <out-dir>/checkpoints/last.pt; SIGTERM/Ctrl-C saves a checkpoint first. Uses "
            "torchrun DDP when WORLD_SIZE is set, bf16 autocast on CUDA, fp32 on CPU. Writes metrics.json, "
            "dvclive/ (one curve per loss term) and encoder.pt (official key names) when done. A checkpoint "
            "trained with other model/pretrain settings or other training data is never resumed: see "
            "--on-change.")
    p.add_argument("--out-dir", help="default: <run_dir>/pretrain/<objective>")
    p.add_argument("--init", help="start the encoder from this checkpoint ({'model': ...}, official key names)")
    p.add_argument("--max-steps", type=int, help="stop after this many total steps (resumable later)")
    p.add_argument("--on-change", choices=("fail", "restart"), default="fail",
                   help="when <out-dir>/checkpoints holds a run with other training settings or data: fail "
                        "naming the changed keys (default), or restart: discard it and train anew (the "
                        "Snakemake rule's choice: Snakemake reruns the job because its settings changed)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda:<LOCAL_RANK> when available, else cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("export", cmd_export, "write {'model': encoder state_dict} loadable by the official SimCroP code")
    p.add_argument("checkpoint", help="a pre-training checkpoint (e.g. .../checkpoints/last.pt)")
    p.add_argument("out", help="output .pt path")

    p = add("export-volume", cmd_export_volume, "write a preprocessed volume or mask (.b2nd cache) as NIfTI",
            "Write any preprocessed volume or mask (the .b2nd training cache, or a NIfTI) as NIfTI with its "
            "affine (RAS, the preprocess spacing), to open in 3D Slicer or ITK-SNAP.")
    p.add_argument("volume", help="e.g. <run_dir>/preprocessed/volumes/<id>.b2nd")
    p.add_argument("out", help="output .nii.gz (or .nii)")

    for name, func, text in (
            ("zeroshot", cmd_zeroshot, "zero-shot classification: 'X is present.' vs 'X is not present.' "
                                       "prompts scored by top-K sentence-patch similarity; AUROC per label"),
            ("retrieve", cmd_retrieve, "report→volume and volume→report retrieval over the split with the "
                                       "kernels' top-K scoring; recall@1/5/10 and MAP"),
            ("ground", cmd_ground, "grounding on the synthetic corpus: share of each lesion sentence's top-K "
                                   "patches inside its lesion and pointing game, vs chance; heat maps")):
        p = add(name, func, text)
        p.add_argument("--checkpoint", help="pre-training checkpoint (default: <run_dir>/pretrain/<objective>/"
                                            "checkpoints/last.pt)")
        p.add_argument("--out", help="metrics JSON (default: <run_dir>/evaluate/<objective>/<task>.json)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("heatmap", cmd_heatmap, "heat map of your own sentence(s) over any CT volume: PNG + NIfTI on its grid",
            "Where in this volume does the model put this sentence? A raw NIfTI / DICOM series folder / MetaImage "
            "is preprocessed in memory with the config's preprocess settings (nothing is written into the run; "
            "--preprocessed: a `simcrop preprocess` output, used as is); the whole volume is tiled with the "
            "checkpoint's crop (half-crop stride) and each patch's cosine with the sentence is painted back, "
            "then resampled (nearest) onto the input's own voxel grid and affine. Per sentence: "
            "<stem>_<n>_<sentence>.png (axial/coronal/sagittal through the best patch, radiological "
            "convention: patient's right on the image left) and .nii.gz (float32, overlays in 3D Slicer or "
            "ITK-SNAP); <stem>.heatmap.json lists the best patch of each.")
    p.add_argument("--checkpoint", help="pre-training checkpoint (default: <run_dir>/pretrain/<objective>/"
                                        "checkpoints/last.pt); model settings come from its own config")
    p.add_argument("--volume", required=True, help="a .nii/.nii.gz, a DICOM series folder or a .mhd/.mha")
    p.add_argument("--text", action="append", required=True, metavar="SENTENCE",
                   help="the sentence to look for; repeat for several (one PNG + NIfTI each)")
    p.add_argument("--mask", help="label map (any grid with a correct affine) outlined in the PNG (voxels > 0)")
    p.add_argument("--out-dir", default="heatmaps", help="output folder (default: ./heatmaps)")
    p.add_argument("--preprocessed", action="store_true",
                   help="--volume is already preprocessed (int16 HU, RAS, the run's spacing): no resampling")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available, else cpu)")

    p = add("prepare", cmd_prepare, "ingest and preprocess a downstream set (an entry of `downstream`)",
            "Run the downstream set's adapter, preprocess every volume with the main preprocess settings (the "
            "encoder's spacing) and gather QC, all in one job: <run_dir>/downstream/<name>/ gets manifest.csv, "
            "preprocessed/, qc.csv and quarantine.csv. Resumable: written volumes are kept.")
    p.add_argument("--dataset", required=True, help="name of the `downstream` entry")
    p.add_argument("--out-dir", help="default: <run_dir>/downstream/<name>")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    for name, func, text, description in (
            ("probe", cmd_probe, "linear probe on the frozen encoder: AUROC (multi-label) or accuracy (multi-class)",
             "Mean of the frozen encoder's patch tokens → LayerNorm → Linear, trained on nested patient-level "
             "fractions of the train split (probe.fractions), epoch picked on val, reported on test "
             "(probe.protocol val_is_test: the official, optimistic protocol). Features are cached per encoder."),
            ("segment", cmd_segment, "UNETR fine-tuning from the pre-trained ViT; Dice per class on test",
             "UNETR (skips from blocks 3/6/9 + output) on the encoder, DiceCE loss, pos/neg crops, sliding-window "
             "inference; segment.* settings, the label map and classes come from the dataset's config.")):
        p = add(name, func, text, description)
        p.add_argument("--dataset", default="main",
                       help="'main' (the pre-training data's test split) or a `downstream` entry (default: main)")
        p.add_argument("--objective", default="simcrop",
                       help="encoder <run_dir>/pretrain/<objective>/encoder.pt, or 'random' (no pre-training)")
        p.add_argument("--encoder", help="an encoder file ({'model': ...}) instead of --objective's, or 'random'")
        p.add_argument("--fraction", type=float, help="one training-data fraction (default: all configured)")
        p.add_argument("--data-dir", help="folder with manifest.csv, qc.csv, preprocessed/ (default: the dataset's)")
        p.add_argument("--out", help="metrics JSON (default: <run_dir>/evaluate/<objective, or the --encoder "
                                     "file's stem>/<task>/<dataset>/<percent or 'all'>.json)")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        if name == "probe":
            p.add_argument("--features-only", action="store_true",
                           help="only compute and cache the encoder's features (one job before the fractions)")

    p = add("report", cmd_report, "results table (Markdown + JSON), plots and heat maps of one run",
            "Collect <run_dir>/pretrain/*/metrics.json and <run_dir>/evaluate/**.json into report/results.md, "
            "results.json, metrics.json (dvc metrics), fraction_curves.csv and loss_curves.csv (dvc plots), "
            "figures/ (AUROC/Dice vs data fraction, loss curves, grounding heat maps).")
    p.add_argument("--run-dir", help="default: <results_dir>/<run>")
    p.add_argument("--out-dir", help="default: <run_dir>/report")
    p.add_argument("--print", action="store_true", help="also print the Markdown table")

    p = add("show", cmd_show, "PNG montage of a few cases with lesion outlines and their sentences")
    p.add_argument("--manifest")
    p.add_argument("--sentences")
    p.add_argument("--preprocessed", help="folder with volumes/ and masks/")
    p.add_argument("--out", help="PNG path (default: <run_dir>/figures/montage.png)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from simcrop.io import DataError   # light: no pandas/torch, so --help stays instant

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except config_mod.ConfigError as err:
        log.error("bad config: %s", err)
        return 2
    except FileNotFoundError as err:
        log.error("%s", err)
        return 1
    except DataError as err:    # the user's data (unreadable CSV, unsafe volume id, too many bad volumes):
        log.error("%s", err)    # one line naming the file and what to do, not a traceback
        return 1
    except RuntimeError as err:
        from simcrop.train.provenance import SettingsChanged

        if not isinstance(err, SettingsChanged):
            raise
        log.error("%s", err)
        return 3


if __name__ == "__main__":
    sys.exit(main())
