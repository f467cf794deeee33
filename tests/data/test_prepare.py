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
