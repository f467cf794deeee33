# Helpers shared by the rule files. The Snakefile validated `config` against the schema; here the same
# tree becomes simcrop's strict Config (defaults filled), so Snakemake and the CLI read one truth.
import json
import math
import os

from simcrop import config as simcrop_config
from simcrop.data.manifest import count_rows

CFG = simcrop_config.from_dict(config)
RUN = str(CFG.run_dir)
LOGS = f"{RUN}/logs"


def section_json(*sections):
    """JSON of the config sections a job needs, for `--set-json` (edits elsewhere do not rerun it)."""
    full = CFG.to_dict()
    picked = {name: full[name] for name in sections}
    picked.update(run=CFG.run, results_dir=CFG.results_dir)
    return json.dumps(picked, sort_keys=True)


def ingest_inputs(wildcards):
    """What the dataset adapter reads: the synthetic corpus's marker, or the user's dataset root."""
    if CFG.data.dataset == "synthetic":
        return [f"{CFG.data.root}/synthetic/corpus.json"]
    return [CFG.data.root]


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
    """Model + pretrain sections with the objective taken from the job's wildcard."""
    picked = json.loads(section_json("model", "pretrain"))
    picked["model"]["objective"] = wildcards.objective
    return json.dumps(picked, sort_keys=True)


def pretrain_targets():
    return [f"{RUN}/pretrain/{CFG.model.objective}/encoder.pt"]


def data_targets():
    return [
        f"{RUN}/qc.csv",
        f"{RUN}/sentences.jsonl",
        f"{RUN}/figures/montage.png",
    ]
