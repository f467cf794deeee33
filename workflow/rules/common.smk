# Helpers shared by the rule files. The Snakefile validated `config` against the schema; here the same
# tree becomes simcrop's strict Config (defaults filled), so Snakemake and the CLI read one truth.
import json
import math
import os
import sys

from simcrop import config as simcrop_config
from simcrop.data import roots as data_roots
from simcrop.data.ingest import input_files as ingest_input_files
from simcrop.data.manifest import count_rows
from simcrop.evaluate import targets as eval_targets
from simcrop.train import variants as pretrain_variants

CFG = simcrop_config.from_dict(config)
RUN = str(CFG.run_dir)
LOGS = f"{RUN}/logs"

# An overlay stands alone: the demo's synthetic downstream sets it inherited are dropped (one notice), and
# a root the run reads that does not exist fails here, naming its key, before any job (simcrop/data/roots.py).
NOTICE = data_roots.dropped_notice(CFG)
if NOTICE:
    print(NOTICE, file=sys.stderr)
data_roots.check_roots(CFG)


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
    """What the dataset adapter reads: the synthetic corpus's marker, or the dataset's folder and each of
    its CSVs (a folder's time stamp misses an edited CSV inside it), so a CSV edit reruns ingest."""
    if CFG.data.dataset == "synthetic":
        return [f"{CFG.data.root}/synthetic/corpus.json"]
    return ingest_input_files(CFG.data)


def shard_ids():
    """Shard ids from the manifest's row count (known once the ingest checkpoint has run)."""
    manifest = checkpoints.ingest.get().output.manifest
    n_shards = math.ceil(count_rows(manifest) / CFG.preprocess.shard_size)
    return [f"{i:05d}" for i in range(n_shards)]


def shard_qc_files(wildcards):
    return expand(f"{RUN}/preprocessed/shards/{{shard}}.qc.csv", shard=shard_ids())


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
    picked["model"], picked["pretrain"] = pretrain_variants.settings(CFG, wildcards.objective)
    return json.dumps(picked, sort_keys=True)


def pretrain_init(wildcards):
    """The encoder of the row a variant starts from (`init_from`), so that row is trained first."""
    source = pretrain_variants.init_row(CFG, wildcards.objective)
    return [] if source is None else [str(pretrain_variants.encoder_of(CFG, source))]


# Wildcard patterns of the pre-trained rows (objectives and variants) and of every row (random too).
TRAINED_ROWS = "|".join(pretrain_variants.trained_rows(CFG))
ALL_ROWS = f"{pretrain_variants.RANDOM}|{TRAINED_ROWS}"


EXP = CFG.experiment
PRETRAINED = [o for o in EXP.objectives if o != eval_targets.RANDOM]
TEXT_TASKS = [t for t in EXP.tasks if t in ("zeroshot", "retrieval", "grounding")]
EVAL_DATASETS = [eval_targets.MAIN, *data_roots.experiment_downstream(CFG)]


def pretrain_targets():
    """Every pre-trained row of the experiment (the configured model.objective too)."""
    objectives = dict.fromkeys([*PRETRAINED, CFG.model.objective])
    return [f"{RUN}/pretrain/{o}/encoder.pt" for o in objectives]


def fractions_of(task):
    return CFG.probe.fractions if task == "probe" else CFG.segment.fractions


def evaluation_targets():
    """objective x (probe | segment) x dataset x fraction, plus objective x text task on the main data."""
    out = []
    for ds in EVAL_DATASETS:
        for task in eval_targets.tasks_of(CFG, ds):
            out += expand(f"{RUN}/evaluate/{{objective}}/{task}/{ds}/{{pct}}.json", objective=EXP.objectives,
                          pct=[eval_targets.percent(f) for f in fractions_of(task)])
    out += expand(f"{RUN}/evaluate/{{objective}}/{{task}}.json", objective=PRETRAINED, task=TEXT_TASKS)
    return out


def report_targets():
    """The results table and metrics, and the pages `snakemake --report` embeds (asked for by name, so a
    run made before they existed gets them too)."""
    return [f"{RUN}/report/{name}" for name in ("results.md", "metrics.json", "results.html", "heatmaps.html",
                                                "benchmarks.html")]


def eval_data(wildcards):
    """QC table (the last file written) of the evaluation dataset named by the `ds` wildcard."""
    return str(eval_targets.data_dir(CFG, wildcards.ds) / "qc.csv")


def encoder_input(wildcards):
    path = eval_targets.encoder_path(CFG, wildcards.objective)
    return [] if path is None else [str(path)]


def downstream_inputs(wildcards):
    """What a downstream adapter reads: the synthetic corpus's marker for the demo's sets, else the root."""
    root = CFG.downstream_dataset(wildcards.ds).root
    if data_roots.synthesized_here(CFG, root):
        return [f"{CFG.data.root}/synthetic/corpus.json"]
    return [root]


def fraction_of(wildcards):
    return float(wildcards.pct) / 100


def downstream_dir(wildcards, output):
    return os.path.dirname(output.qc)


def data_targets():
    return [
        f"{RUN}/qc.csv",
        f"{RUN}/sentences.jsonl",
        f"{RUN}/figures/montage.png",
    ]
