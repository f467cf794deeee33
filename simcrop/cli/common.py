"""What every `simcrop` handler shares: the merged config tree, its resolved copy beside the outputs, the
`simcrop` logger, and the `config` sub-command that prints that tree."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from simcrop import config as config_mod

log = logging.getLogger("simcrop")


def load_config(args) -> config_mod.Config:
    """config/config.yaml (Snakemake's `configfile`), then --config overlays, then --set-json."""
    return config_mod.load([config_mod.DEFAULT_CONFIG_PATH, *args.config], args.set_json)


def write_resolved(cfg: config_mod.Config, path: Path) -> None:
    from simcrop.io import write_text_atomic

    write_text_atomic(path, config_mod.dump(cfg))


def cmd_config(args) -> int:
    cfg = load_config(args)
    text = config_mod.dump(cfg)
    if args.out:
        write_resolved(cfg, Path(args.out))
    else:
        sys.stdout.write(text)
    return 0
