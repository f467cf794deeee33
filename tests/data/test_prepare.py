import pandas as pd
import pytest

from simcrop.config import DataConfig, PreprocessConfig
from simcrop.data.manifest import read_manifest
from simcrop.data.prepare import prepare_dataset
from simcrop.data.synthetic.downstream import write_downstream_samples
from simcrop.layout import DataDir


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("downstream")
    return write_downstream_samples(root, seed=4, n_cases=9)


def test_prepare_runs_adapter_preprocessing_and_gather(samples, tmp_path):
    pre = PreprocessConfig(spacing=[6.0, 6.0, 12.0], shard_size=4)
    data = DataConfig(dataset="ccccii", root=samples["ccccii"], val_fraction=0.2, test_fraction=0.2)
    summary = prepare_dataset(data, pre, tmp_path, progress=False)
    folder = DataDir(tmp_path)
    manifest = read_manifest(folder.manifest)
    qc = pd.read_csv(folder.qc)
    assert len(manifest) == 9 and summary["preprocess"]["shards"] == 3
    # CC-CCII has no split of its own: one patient per class held out as test, one as val
    assert manifest["split"].value_counts().to_dict() == {"train": 3, "val": 3, "test": 3}
    assert sorted(qc["volume_id"]) == sorted(manifest["volume_id"])
    assert all(folder.preprocessed.volume(v).exists() for v in qc["volume_id"])
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
    folder = DataDir(tmp_path)
    volume_id = read_manifest(folder.manifest)["volume_id"].iloc[-1]
    targets = [folder.manifest, folder.qc, tmp_path / "ccccii_derived" / f"{volume_id}.npz",
               folder.preprocessed.volume(volume_id), folder.preprocessed.qc_record(volume_id),
               folder.preprocessed.shard_qc(2)]
    for target in targets:   # named as simcrop.io.atomic_path names them
        suffix = ".nii.gz" if target.name.endswith(".nii.gz") else target.suffix
        target.parent.mkdir(parents=True, exist_ok=True)
        tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    prepare_dataset(data, pre, tmp_path, progress=False)
    assert [p for p in tmp_path.rglob(".*") if ".tmp" in p.name] == []
