"""benchmarks/loader.py --smoke: runs end to end in seconds and writes the figures the GPU check reads."""
from __future__ import annotations

import importlib.util
import json


def test_smoke_run_writes_the_json_and_both_formats_give_the_same_samples(repo_root, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("loader_benchmark", repo_root / "benchmarks" / "loader.py")
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    out = tmp_path / "figures" / "loader.json"
    returned = loader.main(["--smoke", "--json", str(out)])
    figures = json.loads(out.read_text())
    assert figures == json.loads(json.dumps(returned))
    for key in ("nifti_samples_per_s", "cache_samples_per_s", "ratio", "nifti_bytes", "cache_bytes",
                "whole_volume_samples_per_s", "ratio_vs_whole_volume"):
        assert figures[key] > 0, key
    assert abs(figures["ratio"] - figures["cache_samples_per_s"] / figures["nifti_samples_per_s"]) < 1e-9
    assert figures["identical_samples"] is True and figures["smoke"] is True
    from simcrop.data.preprocessed_io import CACHE_CODECS
    assert list(figures["codecs"]) == list(CACHE_CODECS) and figures["cache_codec"] == CACHE_CODECS[0]
    assert all(c["samples_per_s"] > 0 and c["bytes"] > 0 for c in figures["codecs"].values())
    assert figures["codecs"][CACHE_CODECS[0]]["samples_per_s"] == figures["cache_samples_per_s"]
    assert figures["crop"] == [32, 32, 16] and figures["samples"] == 6
    table = capsys.readouterr().out
    assert "cache .b2nd" in table and "nifti .nii.gz" in table and "goal >= 6x" in table
