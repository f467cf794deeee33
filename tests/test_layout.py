"""The run layout: one spelling of every run-folder path, shard naming and count."""
import os
from pathlib import Path

import pytest

from simcrop import layout


def test_shard_names_count_and_sort():
    assert layout.num_shards(0, 25) == 1          # an empty manifest still makes one (empty) shard
    assert layout.num_shards(25, 25) == 1
    assert layout.num_shards(50, 25) == 2
    assert layout.num_shards(51, 25) == 3
    assert layout.shard_names(51, 25) == ["00000", "00001", "00002"]
    assert layout.shard_name("{shard}") == "{shard}"   # a Snakemake wildcard passes through
    with pytest.raises(ValueError, match="shard_size"):
        layout.num_shards(10, 0)


def test_run_paths(tmp_path):
    run = layout.Run(tmp_path / "demo")
    assert run.manifest == tmp_path / "demo" / "manifest.csv"
    assert run.preprocessed.volume("v1") == tmp_path / "demo" / "preprocessed" / "volumes" / "v1.b2nd"
    assert run.preprocessed.mask("v1", "lesion").name == "v1.lesion.b2nd"
    assert run.encoder("mae") == tmp_path / "demo" / "pretrain" / "mae" / "encoder.pt"
    assert run.checkpoint("mae").parts[-2:] == ("checkpoints", "last.pt")
    assert run.evaluation("mae", "grounding") == tmp_path / "demo" / "evaluate" / "mae" / "grounding.json"
    assert run.evaluation("{objective}", "probe", "main", "{pct}") == Path(
        tmp_path / "demo" / "evaluate" / "{objective}" / "probe" / "main" / "{pct}.json")
    assert run.downstream("luna16").qc == tmp_path / "demo" / "downstream" / "luna16" / "qc.csv"


def test_volume_suffix_follows_the_format_and_readers_find_either(tmp_path):
    assert layout.VOLUME_FORMATS[0] == "b2nd"                       # preprocess.format's default
    nifti, cache, reader = (layout.Preprocessed(tmp_path, "nifti"), layout.Preprocessed(tmp_path, "b2nd"),
                            layout.Preprocessed(tmp_path))
    assert nifti.volume("v").name == "v.nii.gz" and nifti.mask("v", "organ").name == "v.organ.nii.gz"
    assert cache.volume("v").name == "v.b2nd" and cache.mask("v", "organ").name == "v.organ.b2nd"
    assert reader.volume("v") == cache.volume("v")                    # nothing written: the default's name
    nifti.volumes.mkdir(parents=True)
    nifti.volume("v").write_bytes(b"")
    assert reader.volume("v") == nifti.volume("v")                    # the file on disk, whichever format
    cache.volume("v").write_bytes(b"")
    os.utime(nifti.volume("v"), (1, 1))
    assert reader.volume("v") == cache.volume("v")                    # both: the newer one
    assert [layout.volume_format(p) for p in ("a.b2nd", "a.nii.gz", "a.nii")] == ["b2nd", "nifti", "nifti"]
    with pytest.raises(ValueError, match="not a preprocessed volume"):
        layout.volume_format("a.npz")
    with pytest.raises(ValueError, match="unknown volume format"):
        layout.Preprocessed(tmp_path, "zarr")


def test_shard_tables_sit_side_by_side(tmp_path):
    pre = layout.Preprocessed(tmp_path)
    qc = pre.shard_qc(3)
    assert qc.name == "00003.qc.csv"
    assert layout.Preprocessed.quarantine_of(qc) == pre.shard_quarantine(3)


def test_job_logs_benchmarks_and_figures_beside_results(tmp_path):
    run = layout.Run(tmp_path)
    assert run.log("preprocess", "{shard}") == tmp_path / "logs" / "preprocess" / "{shard}.log"
    assert run.log("report") == tmp_path / "logs" / "report.log"
    assert run.benchmark("probe", "simcrop", "main", "100") == tmp_path / "benchmarks/probe/simcrop/main/100.tsv"
    grounding = run.evaluation("simcrop", "grounding")
    assert layout.figures_beside(grounding) == tmp_path / "evaluate" / "simcrop" / "grounding_figures"
    assert layout.Preprocessed(tmp_path).qc_record("v1") == tmp_path / "qc" / "v1.json"
    assert [layout.percent(f) for f in (0.01, 0.1, 1.0, 0.25)] == ["1", "10", "100", "25"]


def test_importing_the_layout_stays_light():
    """workflow/rules/common.smk and the CLI import it at start-up: no pandas, torch or package modules."""
    import subprocess
    import sys

    code = ("import sys, simcrop.layout; heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('pandas', 'torch', 'numpy') or (m.startswith('simcrop.') and m != 'simcrop.layout')]; print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.fixture
def cfg():
    from simcrop import config

    return config.from_dict({
        "run": "r", "results_dir": "out",
        "probe": {"fractions": [0.1, 1.0]}, "segment": {"fractions": [1.0]},
        "experiment": {"objectives": ["random", "simcrop", "simcrop_from_mae"], "tasks": ["probe", "grounding"],
                       "downstream": ["cc", "lungs"],
                       "variants": {"simcrop_from_mae": {"objective": "simcrop", "init_from": "mae"}}},
        "downstream": {"cc": {"dataset": "ccccii", "root": "/d/cc", "probe_task": "multiclass"},
                       "lungs": {"dataset": "luna16", "root": "/d/l", "tasks": ["segment"], "label_map": "luna16"}}})


def test_data_dirs_and_encoders_of_a_config(cfg):
    from simcrop.config import ConfigError

    assert layout.data_dir(cfg, layout.MAIN).root == Path("out/r")
    assert layout.data_dir(cfg, "cc").qc == Path("out/r/downstream/cc/qc.csv")
    with pytest.raises(ConfigError, match="'nope' is not configured"):
        layout.data_dir(cfg, "nope")
    assert layout.encoder_of(cfg, layout.RANDOM) is None
    assert layout.encoder_of(cfg, "mae") == Path("out/r/pretrain/mae/encoder.pt")
    assert layout.init_encoder(cfg, "simcrop_from_mae") == Path("out/r/pretrain/mae/encoder.pt")
    assert layout.init_encoder(cfg, "simcrop") is None


def test_targets_of_a_config(cfg):
    run = layout.run_of(cfg)
    assert layout.pretrain_targets(cfg) == [run.encoder("simcrop"), run.encoder("simcrop_from_mae")]
    rows = ["random", "simcrop", "simcrop_from_mae"]
    expected = [run.evaluation(r, "probe", ds, p) for ds in ("main", "cc") for r in rows for p in ("10", "100")]
    expected += [run.evaluation(r, "segment", "lungs", "100") for r in rows]
    expected += [run.evaluation(r, "grounding") for r in rows[1:]]          # the untrained row has no text task
    assert layout.evaluation_targets(cfg) == expected
    assert layout.report_inputs(cfg) == [*expected, run.pretrain_metrics("simcrop"),
                                         run.pretrain_metrics("simcrop_from_mae")]
    assert layout.report_targets(cfg)[0] == Path("out/r/report/results.md")
    assert {"simcrop", "mae", "simcrop_from_mae"} <= set(layout.trained_rows(cfg))


def test_inputs_of_a_config(cfg, tmp_path):
    assert layout.ingest_inputs(cfg) == [str(Path(cfg.data.root) / "synthetic" / "corpus.json")]
    assert layout.downstream_inputs(cfg, "cc") == ["/d/cc"]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("volume_id\n" + "".join(f"v{i}\n" for i in range(51)))
    assert layout.manifest_shards(manifest, 25) == ["00000", "00001", "00002"]
