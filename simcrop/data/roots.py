"""The data roots a config reads: which downstream sets an experiment evaluates, and that each root exists.

Snakemake deep-merges a `--configfile` overlay over config/config.yaml, the demo, so a dataset overlay
inherits the demo's downstream sets, whose roots lie in the synthetic corpus `simcrop synthesize` writes
(`data/synthetic/downstream/<name>`). The rule:

- a downstream set whose root lies inside the synthetic corpus of this run (`data.dataset: synthetic`,
  root inside `data.root`) is written by the synthesize rule: it is evaluated and need not exist yet;
- a downstream set whose root lies inside the demo's corpus (`data/synthetic`, the default `data.root`)
  while the run does not synthesize it is a demo set the overlay inherited: it is dropped from the
  experiment with one notice line naming it (point `downstream.<name>.root` at real data to keep it);
- every other root the run reads (`data.root`, or `data.folder.images` and `data.folder.reports_csv`
  for a folder; `downstream.<name>.root` of each evaluated set) must exist: `check_roots` raises a
  ConfigError naming each missing one by config key and path, before any job starts.

The Snakefile applies it at parse time (workflow/rules/common.smk); the CLI can call the same functions.
"""
from __future__ import annotations

import os
from pathlib import Path

from simcrop.config import Config, ConfigError, DataConfig

DEMO_CORPUS = DataConfig().root          # where the demo's `simcrop synthesize` writes: data/synthetic


def _inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    return os.path.commonpath([path, folder]) == folder


def synthesized_here(cfg: Config, root: str | os.PathLike) -> bool:
    """Whether `root` is written by this run's synthesize rule (inside a synthetic main dataset's root)."""
    return cfg.data.dataset == "synthetic" and _inside(root, cfg.data.root)


def dropped_downstream(cfg: Config) -> list[str]:
    """Names in `experiment.downstream` that are demo sets this run does not synthesize (see module doc)."""
    return [name for name in cfg.experiment.downstream
            if not synthesized_here(cfg, cfg.downstream_dataset(name).root)
            and _inside(cfg.downstream_dataset(name).root, DEMO_CORPUS)]


def experiment_downstream(cfg: Config) -> list[str]:
    """The downstream sets the experiment evaluates: `experiment.downstream` less the dropped demo sets."""
    dropped = set(dropped_downstream(cfg))
    return [name for name in cfg.experiment.downstream if name not in dropped]


def dropped_notice(cfg: Config) -> str:
    """One line naming the dropped demo sets ("" when none is dropped)."""
    dropped = dropped_downstream(cfg)
    if not dropped:
        return ""
    return (f"notice: not evaluating the demo's synthetic downstream set(s) {', '.join(dropped)} "
            f"(their roots lie in {DEMO_CORPUS}/, which only a `data.dataset: synthetic` run writes); "
            "to evaluate one, set downstream.<name>.root to your copy of the real data")


def read_roots(cfg: Config) -> list[tuple[str, str]]:
    """(config key, path) of every root the run reads and does not write itself."""
    data = cfg.data
    if data.dataset == "synthetic":
        roots = []
    elif data.dataset == "folder":
        roots = [("data.folder.images", data.folder.images) if data.folder.images else ("data.root", data.root)]
        if data.folder.reports_csv:
            roots.append(("data.folder.reports_csv", data.folder.reports_csv))
    else:
        roots = [("data.root", data.root)]
    for name in experiment_downstream(cfg):
        root = cfg.downstream_dataset(name).root
        if not synthesized_here(cfg, root):
            roots.append((f"downstream.{name}.root", root))
    return roots


def missing_roots(cfg: Config) -> list[tuple[str, str]]:
    """The (key, path) pairs of `read_roots` whose path does not exist (relative paths: from the cwd)."""
    return [(key, path) for key, path in read_roots(cfg) if not path or not Path(path).exists()]


def check_roots(cfg: Config) -> None:
    """Raise a ConfigError naming the key and path of every root the run reads that does not exist."""
    missing = missing_roots(cfg)
    if missing:
        where = "; ".join(f"config key {key}: {path or '(empty)'} does not exist" for key, path in missing)
        relative = any(path and not os.path.isabs(path) for _, path in missing)
        cwd = f" (relative to the working directory {os.getcwd()})" if relative else ""
        raise ConfigError(f"{where}{cwd}; set it in your --configfile overlay to where the data is")
