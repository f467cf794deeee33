"""The run layout: one spelling of every run-folder path, shard naming and count."""
from pathlib import Path

import pytest

from simcrop import layout


def test_shard_names_count_and_sort():
    assert layout.num_shards(0, 25) == 1          # an empty manifest still makes one (empty) shard
    assert layout.num_shards(50, 25) == 2
    assert layout.num_shards(51, 25) == 3
    assert layout.shard_names(51, 25) == ["00000", "00001", "00002"]
    assert layout.shard_name("{shard}") == "{shard}"   # a Snakemake wildcard passes through
    with pytest.raises(ValueError, match="shard_size"):
        layout.num_shards(10, 0)


def test_run_paths(tmp_path):
    run = layout.Run(tmp_path / "demo")
    assert run.manifest == tmp_path / "demo" / "manifest.csv"
    assert run.preprocessed.volume("v1") == tmp_path / "demo" / "preprocessed" / "volumes" / "v1.nii.gz"
    assert run.preprocessed.mask("v1", "lesion").name == "v1.lesion.nii.gz"
    assert run.encoder("mae") == tmp_path / "demo" / "pretrain" / "mae" / "encoder.pt"
    assert run.checkpoint("mae").parts[-2:] == ("checkpoints", "last.pt")
    assert run.evaluation("mae", "grounding") == tmp_path / "demo" / "evaluate" / "mae" / "grounding.json"
    assert run.evaluation("{objective}", "probe", "main", "{pct}") == Path(
        tmp_path / "demo" / "evaluate" / "{objective}" / "probe" / "main" / "{pct}.json")
    assert run.downstream("luna16").qc == tmp_path / "demo" / "downstream" / "luna16" / "qc.csv"


def test_shard_tables_sit_side_by_side(tmp_path):
    pre = layout.Preprocessed(tmp_path)
    qc = pre.shard_qc(3)
    assert qc.name == "00003.qc.csv"
    assert layout.Preprocessed.quarantine_of(qc) == pre.shard_quarantine(3)
