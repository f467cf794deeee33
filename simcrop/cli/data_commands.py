"""Handlers of the data sub-commands: synthesize, ingest, preprocess, gather, sentences, prepare, show and
export-volume. Each resolves its paths from the config and makes one call into simcrop.data / simcrop.text;
the heavy modules are imported inside each handler so `simcrop --help` stays instant."""
from __future__ import annotations

from pathlib import Path

from simcrop import layout

from .common import load_config, log, write_resolved


def cmd_synthesize(args) -> int:
    from simcrop.data.synthetic import generate_corpus

    cfg = load_config(args)
    root = Path(args.out or cfg.data.root)
    summary = generate_corpus(root, cfg.synthesize, progress=not args.quiet)
    if cfg.synthesize.downstream_samples:
        from simcrop.data.synthetic.downstream import write_downstream_samples

        summary["downstream"] = write_downstream_samples(root / "downstream", cfg.synthesize.seed,
                                                         cfg.synthesize.downstream_cases)
    write_resolved(cfg, root / "synthesize.config.yaml")
    log.info("synthetic corpus in %s: %s", root, summary)
    return 0


def cmd_ingest(args) -> int:
    from simcrop.data.ingest import ingest

    cfg = load_config(args)
    manifest = Path(args.manifest or layout.run_of(cfg).manifest)
    beside = layout.DataDir(manifest.parent)          # the report and resolved config go next to the manifest
    report = Path(args.report or beside.ingest_report)
    summary = ingest(cfg.data, manifest, report)
    write_resolved(cfg, beside.resolved_config("ingest"))
    log.info("manifest %s: %s", manifest, summary)
    return 0


def cmd_preprocess(args) -> int:
    from simcrop.data.preprocess import preprocess_shard

    cfg = load_config(args)
    run = layout.run_of(cfg)
    out_dir = Path(args.out_dir or run.preprocessed)
    manifest = Path(args.manifest or run.manifest)
    summary = preprocess_shard(manifest, args.shard, out_dir, cfg.preprocess, progress=not args.quiet)
    log.info("shard %d: %s", args.shard, summary)
    return 0


def cmd_gather(args) -> int:
    from simcrop.data.preprocess import gather_shards

    cfg = load_config(args)
    out = layout.DataDir(args.out_dir or cfg.run_dir)
    qc_files = [Path(p) for p in args.shards] if args.shards else out.preprocessed.shard_qc_files()
    quarantine_files = [layout.Preprocessed.quarantine_of(p) for p in qc_files]
    gather_shards(qc_files, quarantine_files, out.qc, out.quarantine, out.preprocess_summary,
                  cfg.preprocess.max_bad_fraction)
    write_resolved(cfg, out.resolved_config("preprocess"))
    return 0


def cmd_sentences(args) -> int:
    from simcrop.text.sentences import sentences_for_manifest

    cfg = load_config(args)
    run = layout.run_of(cfg)
    manifest = Path(args.manifest or run.manifest)
    out = Path(args.out or run.sentences)
    quarantine = Path(args.quarantine or layout.DataDir(out.parent).sentences_quarantine)
    summary = sentences_for_manifest(manifest, out, cfg.sentences, quarantine)
    log.info("sentences %s: %s", out, summary)
    return 0


def cmd_show(args) -> int:
    from simcrop.evaluate.montage import write_montage

    cfg = load_config(args)
    run = layout.run_of(cfg)
    out = Path(args.out or run.montage)
    write_montage(manifest=Path(args.manifest or run.manifest),
                  sentences=Path(args.sentences or run.sentences),
                  preprocessed=Path(args.preprocessed or run.preprocessed),
                  out=out, n_cases=cfg.show.n_cases)
    log.info("montage written to %s", out)
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


def cmd_prepare(args) -> int:
    from simcrop.data.prepare import prepare_dataset
    from simcrop.evaluate import targets

    cfg = load_config(args)
    out_dir = Path(args.out_dir or layout.data_dir(cfg, args.dataset))
    summary = prepare_dataset(targets.downstream_data_config(cfg, args.dataset), cfg.preprocess, out_dir,
                              progress=not args.quiet)
    write_resolved(cfg, layout.DataDir(out_dir).resolved_config("prepare"))
    log.info("downstream set %s prepared in %s: %s", args.dataset, out_dir, summary)
    return 0
