# Helpers shared by the rule files. The Snakefile validated `config` against the schema; here the same
# tree becomes simcrop's strict Config (defaults filled), so Snakemake and the CLI read one truth, and
# every path, target and input list comes from simcrop.layout, the one home of the run folder's paths.
import json
import os
import sys

from simcrop import config as simcrop_config
from simcrop import layout

CFG = simcrop_config.from_dict(config)
RUN = layout.run_of(CFG)

# An overlay stands alone: the demo's synthetic downstream sets it inherited are dropped (one notice), and
# a root the run reads that does not exist fails here, naming its key, before any job (simcrop/data/roots.py).
NOTICE = layout.dropped_notice(CFG)
if NOTICE:
    print(NOTICE, file=sys.stderr)
layout.check_roots(CFG)


# Which rows the experiment has is no setting of one row's job: adding an ablation must not rerun the
# probes of the rows already evaluated (the report job, which lists the rows, keeps them).
ROW_KEYS = ("objectives", "variants")


def section_json(*sections, rows=False):
    """JSON of the config sections a job needs, for `--set-json` (edits elsewhere do not rerun it)."""
    full = CFG.to_dict()
    picked = {name: full[name] for name in sections}
    if "experiment" in picked and not rows:
        picked["experiment"] = {k: v for k, v in picked["experiment"].items() if k not in ROW_KEYS}
    picked.update(run=CFG.run, results_dir=CFG.results_dir)
    return json.dumps(picked, sort_keys=True)


def ingest_inputs(wildcards):
    return layout.ingest_inputs(CFG)


def shard_qc_files(wildcards):
    """One QC table per shard; how many is known once the ingest checkpoint has written the manifest."""
    manifest = checkpoints.ingest.get().output.manifest
    return [str(RUN.preprocessed.shard_qc(s)) for s in layout.manifest_shards(manifest, CFG.preprocess.shard_size)]


# Folder params derived from outputs (not hard-coded prefixes), as the linter asks.
def corpus_root(wildcards, output):
    return os.path.dirname(os.path.dirname(output.marker))  # <root>/synthetic/corpus.json


def preprocessed_dir(wildcards, output):
    return os.path.dirname(os.path.dirname(output.qc))


def run_dir_of_qc(wildcards, output):
    return os.path.dirname(output.qc)


def pretrain_dir(wildcards, output):
    return os.path.dirname(output.encoder)


def pretrain_json(wildcards):
    """Model + pretrain sections of the row named by the job's wildcard (an objective, or a variant's
    settings merged over the run's), plus data and preprocess, so the checkpoint's config records the
    spacing and window the encoder was trained at (heat maps and downstream checks read them from there)."""
    picked = json.loads(section_json("data", "preprocess"))
    picked["model"], picked["pretrain"] = layout.pretrain_settings(CFG, wildcards.objective)
    return json.dumps(picked, sort_keys=True)


def pretrain_init(wildcards):
    """The encoder of the row a variant starts from (`init_from`), so that row is trained first."""
    source = layout.init_encoder(CFG, wildcards.objective)
    return [] if source is None else [str(source)]


# Wildcard patterns of the pre-trained rows (objectives and variants) and of every row (random too).
TRAINED_ROWS = "|".join(layout.trained_rows(CFG))
ALL_ROWS = f"{layout.RANDOM}|{TRAINED_ROWS}"


def data_targets():
    return [RUN.qc, RUN.sentences, RUN.montage]


def pretrain_targets():
    return layout.pretrain_targets(CFG)


def report_targets():
    return layout.report_targets(CFG)


def eval_data(wildcards):
    """QC table (the last file written) of the evaluation dataset named by the `ds` wildcard."""
    return str(layout.data_dir(CFG, wildcards.ds).qc)


def encoder_input(wildcards):
    path = layout.encoder_of(CFG, wildcards.objective)
    return [] if path is None else [str(path)]


def downstream_inputs(wildcards):
    return layout.downstream_inputs(CFG, wildcards.ds)


def fraction_of(wildcards):
    return float(wildcards.pct) / 100


def downstream_dir(wildcards, output):
    return os.path.dirname(output.qc)
