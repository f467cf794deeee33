"""The feature cache: rows by id, meta must match, unreadable or other-format files are recomputed."""
from __future__ import annotations

import torch

from simcrop.evaluate import feature_cache


def test_round_trip_subset_and_meta(tmp_path):
    path = tmp_path / "c" / "f.pt"
    feats = torch.arange(12.0).reshape(3, 4)
    feature_cache.save(path, ["a", "b", "c"], feats, crop=(32, 32, 16), view="tiles")
    assert torch.equal(feature_cache.load(path, ["c", "a"], crop=[32, 32, 16], view="tiles"), feats[[2, 0]])
    assert feature_cache.load(path, ["a"], crop=(32, 32, 16), view="center") is None
    assert feature_cache.load(path, ["a", "z"], crop=(32, 32, 16), view="tiles") is None
    assert feature_cache.load(tmp_path / "none.pt", ["a"]) is None


def test_bad_files_are_misses_and_keys_are_stable(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    assert feature_cache.load(tmp_path / "bad.pt", ["a"]) is None
    torch.save({"features": torch.zeros(1, 2), "paths": ["a"]}, tmp_path / "old.pt")      # older format
    assert feature_cache.load(tmp_path / "old.pt", ["a"]) is None
    assert feature_cache.key(crop=(1, 2), paths=["x"]) == feature_cache.key(paths=["x"], crop=[1, 2])
    assert len(feature_cache.key(a=1)) == 16
