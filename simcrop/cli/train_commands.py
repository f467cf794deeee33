"""Handlers of the training sub-commands: pretrain (one call into simcrop.train.pretrain) and export (the
encoder's weights under the official key names). Heavy imports stay inside each handler."""
from __future__ import annotations

from pathlib import Path

from simcrop import layout

from .common import load_config, log


def cmd_pretrain(args) -> int:
    from simcrop.train.pretrain import pretrain

    cfg = load_config(args)
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
