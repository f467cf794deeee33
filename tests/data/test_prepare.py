import pandas as pd
import pytest

from simcrop.config import DataConfig, PreprocessConfig
from simcrop.data.manifest import read_manifest
from simcrop.data.prepare import prepare_dataset
from simcrop.data.synthetic.downstream import write_downstream_samples


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("downstream")
    return write_downstream_samples(root, seed=4, n_cases=9)


def test_prepare_runs_adapter_preprocessing_and_gather(samples, tmp_path):
    pre = PreprocessConfig(spacing=[6.0, 6.0, 12.0], shard_size=4)
    data = DataConfig(dataset="ccccii", root=samples["ccccii"], val_fraction=0.2, test_fraction=0.2)
    summary = prepare_dataset(data, pre, tmp_path, progress=False)
    manifest = read_manifest(tmp_path / "manifest.csv")
    qc = pd.read_csv(tmp_path / "qc.csv")
    assert len(manifest) == 9 and summary["preprocess"]["shards"] == 3
    # CC-CCII has no split of its own: one patient per class held out as test, one as val
    assert manifest["split"].value_counts().to_dict() == {"train": 3, "val": 3, "test": 3}
    assert sorted(qc["volume_id"]) == sorted(manifest["volume_id"])
    assert all((tmp_path / "preprocessed" / "volumes" / f"{v}.nii.gz").exists() for v in qc["volume_id"])
    # a second call resumes: every volume is already written
    again = prepare_dataset(data, pre, tmp_path, progress=False)
    assert again["preprocess"]["resumed"] == 9


def test_prepare_names_a_missing_root(tmp_path):
    with pytest.raises((FileNotFoundError, ValueError), match="nowhere"):
        prepare_dataset(DataConfig(dataset="btcv", root=str(tmp_path / "nowhere")), PreprocessConfig(), tmp_path)


def test_prepare_after_a_kill_leaves_no_temporary_files(samples, tmp_path):
    """A killed `simcrop prepare` leaves `.<name>.<random>.tmp<suffix>` files; the rerun removes them."""
    import tempfile

    pre = PreprocessConfig(spacing=[6.0, 6.0, 12.0], shard_size=4)
    data = DataConfig(dataset="ccccii", root=samples["ccccii"])
    prepare_dataset(data, pre, tmp_path, progress=False)
    volume_id = read_manifest(tmp_path / "manifest.csv")["volume_id"].iloc[-1]
    targets = [tmp_path / "manifest.csv", tmp_path / "qc.csv", tmp_path / "ccccii_derived" / f"{volume_id}.npz",
               tmp_path / "preprocessed" / "volumes" / f"{volume_id}.nii.gz",
               tmp_path / "preprocessed" / "qc" / f"{volume_id}.json",
               tmp_path / "preprocessed" / "shards" / "00002.qc.csv"]
    for target in targets:   # named as simcrop.io.atomic_path names them
        suffix = ".nii.gz" if target.name.endswith(".nii.gz") else target.suffix
        target.parent.mkdir(parents=True, exist_ok=True)
        tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    prepare_dataset(data, pre, tmp_path, progress=False)
    assert [p for p in tmp_path.rglob(".*") if ".tmp" in p.name] == []
