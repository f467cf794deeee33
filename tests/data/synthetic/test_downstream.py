import hashlib
import json

import numpy as np
import pytest

from simcrop.data.adapters.btcv import read_btcv
from simcrop.data.adapters.ccccii import read_ccccii
from simcrop.data.adapters.luna16 import read_luna16
from simcrop.data.adapters.radchestct import read_radchestct
from simcrop.data.synthetic.downstream import phantom_case, write_downstream_samples


def digest(root):
    """{relative path: sha256} of every file under root."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("downstream")
    return root, write_downstream_samples(root, seed=3, n_cases=3)


def test_every_adapter_reads_its_sample(samples, tmp_path):
    root, out = samples
    assert out == {name: str(root / name) for name in ("radchestct", "ccccii", "luna16", "btcv")}
    counts = {"radchestct": len(read_radchestct(out["radchestct"])[0]),
              "ccccii": len(read_ccccii(out["ccccii"], cache_dir=tmp_path / "cc")[0]),
              "luna16": len(read_luna16(out["luna16"], mask_dir=tmp_path / "masks")[0]),
              "btcv": len(read_btcv(out["btcv"])[0])}
    assert counts == {"radchestct": 3, "ccccii": 3, "luna16": 3, "btcv": 3}


def test_deterministic_from_seed(samples, tmp_path):
    root, _ = samples
    write_downstream_samples(tmp_path / "again", seed=3, n_cases=3)
    first, again = digest(root), digest(tmp_path / "again")
    assert first.keys() == again.keys()
    # gzip and npz members carry no timestamps that vary: the bytes match
    assert first == again


def test_phantom_case_is_a_chest_in_hu():
    case = phantom_case(seed=0, index=1)
    hu = case["hu"]
    assert hu.dtype == np.int16 and hu.shape == case["grid"].shape
    assert (hu < -500).mean() > 0.2 and hu.max() > 300
    assert case["organs"].max() > 0


def test_btcv_dataset_json_is_msd_style(samples):
    spec = json.loads((samples[0] / "btcv" / "dataset.json").read_text())
    assert len(spec["training"]) == 2 and len(spec["validation"]) == 1
    assert spec["labels"]["1"] == "spleen" and spec["labels"]["13"] == "left_adrenal_gland"


def test_too_few_cases(tmp_path):
    with pytest.raises(ValueError, match="n_cases must be >= 3"):
        write_downstream_samples(tmp_path, seed=0, n_cases=2)
