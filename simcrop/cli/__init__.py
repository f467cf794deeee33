"""`simcrop` command line: one sub-command per pipeline step.

Every sub-command reads the same config tree (`--config` YAML files, merged in order, then `--set-json`
overrides, which is how Snakemake rules pass the sections they use), writes its outputs atomically and
can be run by hand with the arguments a rule uses. Heavy imports happen inside each command so `--help`
stays instant.

Modules: parser (sub-commands, options, help), common (config loading, the `config` command), and the
handlers by pipeline stage: data_commands, train_commands, evaluate_commands. This module holds `main`:
parse, run the handler, turn the known errors into one log line and an exit code.
"""
from __future__ import annotations

import logging

from simcrop import config as config_mod

from .common import log
from .parser import build_parser

__all__ = ["build_parser", "main"]


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
