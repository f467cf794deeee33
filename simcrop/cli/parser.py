"""The `simcrop` argument parser: every sub-command, its options and help text, and the handler each runs.
Building it imports only the handler modules, which import nothing heavy, so `simcrop --help` stays instant."""
from __future__ import annotations

import argparse

from .common import cmd_config
from .data_commands import (cmd_export_volume, cmd_gather, cmd_ingest, cmd_prepare, cmd_preprocess,
                            cmd_sentences, cmd_show, cmd_synthesize)
from .evaluate_commands import (cmd_ground, cmd_heatmap, cmd_probe, cmd_report, cmd_retrieve, cmd_segment,
                                cmd_zeroshot)
from .train_commands import cmd_export, cmd_pretrain


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="config file(s), merged in order over config/config.yaml, the same base "
                             "Snakemake reads, so a step run by hand trains what the workflow trains")
    parser.add_argument("--set-json", action="append", default=[], metavar="JSON",
                        help="JSON mapping merged over the config files (used by the Snakemake rules)")



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
