"""Which downstream sets an overlaid config evaluates, and the missing-root error that names key and path."""
import re

import pytest

from simcrop import config as config_mod
from simcrop.config import ConfigError
from simcrop.data import roots

DEMO_SETS = ["radchestct", "ccccii", "luna16", "btcv"]


def _demo_plus(overlay: dict) -> config_mod.Config:
    """config/config.yaml deep-merged with `overlay`, as `snakemake --configfile overlay` builds it."""
    return config_mod.from_dict(config_mod.deep_merge(config_mod.read_yaml(config_mod.DEFAULT_CONFIG_PATH),
                                                      overlay))


def _folder(images, reports=""):
    return {"run": "mine", "data": {"dataset": "folder", "root": str(images),
                                    "folder": {"images": str(images), "reports_csv": str(reports)}}}


def test_demo_keeps_its_synthetic_sets_and_needs_none_to_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                    # a fresh clone: data/synthetic not written yet
    cfg = _demo_plus({})
    assert roots.experiment_downstream(cfg) == DEMO_SETS
    assert roots.dropped_downstream(cfg) == [] and roots.dropped_notice(cfg) == ""
    assert roots.read_roots(cfg) == []
    roots.check_roots(cfg)


def test_dataset_overlay_drops_the_inherited_demo_sets_with_one_notice(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "reports.csv").write_text("VolumeName,Findings_EN,Impressions_EN\n")
    cfg = _demo_plus(_folder(tmp_path / "images", tmp_path / "reports.csv"))
    assert roots.experiment_downstream(cfg) == []
    assert roots.dropped_downstream(cfg) == DEMO_SETS
    notice = roots.dropped_notice(cfg)
    assert "\n" not in notice and notice.startswith("notice: ")
    assert "radchestct, ccccii, luna16, btcv" in notice and "downstream.<name>.root" in notice
    assert roots.read_roots(cfg) == [("data.folder.images", str(tmp_path / "images")),
                                     ("data.folder.reports_csv", str(tmp_path / "reports.csv"))]
    roots.check_roots(cfg)
    # Even where an earlier demo run left data/synthetic behind: a real-data run never evaluates phantoms.
    (tmp_path / "data" / "synthetic" / "downstream" / "btcv").mkdir(parents=True)
    assert roots.experiment_downstream(cfg) == []


def test_real_downstream_root_is_kept_and_must_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real = tmp_path / "RAD-ChestCT"
    overlay = {"experiment": {"downstream": ["radchestct", "btcv"]},
               "downstream": {"radchestct": {"dataset": "radchestct", "root": str(real), "tasks": ["probe"]}}}
    cfg = _demo_plus(overlay)                      # synthetic main data: its own btcv set is written by it
    assert roots.experiment_downstream(cfg) == ["radchestct", "btcv"]
    assert roots.read_roots(cfg) == [("downstream.radchestct.root", str(real))]
    with pytest.raises(ConfigError) as err:
        roots.check_roots(cfg)
    assert str(err.value) == (f"config key downstream.radchestct.root: {real} does not exist; "
                              "set it in your --configfile overlay to where the data is")
    real.mkdir()
    roots.check_roots(cfg)


@pytest.mark.parametrize("overlay, key", [
    ({"data": {"dataset": "ctrate", "root": "/nowhere/CT-RATE"}}, "data.root"),
    ({"data": {"dataset": "manifest", "root": "/nowhere/manifest.csv"}}, "data.root"),
    ({"data": {"dataset": "folder", "root": "/nowhere/images"}}, "data.root"),      # images empty: root
    (_folder("/nowhere/images"), "data.folder.images"),
])
def test_missing_main_root_names_key_and_path(overlay, key, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _demo_plus(overlay)
    path = cfg.data.folder.images or cfg.data.root
    with pytest.raises(ConfigError, match=f"^config key {key}: {path} does not exist; set it in your "):
        roots.check_roots(cfg)


def test_every_missing_root_is_named_and_relative_ones_say_from_where(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    overlay = {**_folder("images", "notes/reports.csv"), "experiment": {"downstream": ["luna16"]},
               "downstream": {"luna16": {"dataset": "luna16", "root": "/nowhere/LUNA16", "tasks": ["segment"]}}}
    with pytest.raises(ConfigError) as err:
        roots.check_roots(_demo_plus(overlay))
    assert str(err.value) == (
        "config key data.folder.reports_csv: notes/reports.csv does not exist; config key downstream.luna16.root: "
        f"/nowhere/LUNA16 does not exist (relative to the working directory {tmp_path}); set it in your "
        "--configfile overlay to where the data is")


@pytest.mark.parametrize("overlay", sorted((config_mod.DEFAULT_CONFIG_PATH.parent / "datasets").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_shipped_overlays_name_their_placeholder_paths(overlay, tmp_path, monkeypatch):
    """As shipped, every dataset overlay fails at once, naming each `/path/to/...` it still holds."""
    monkeypatch.chdir(tmp_path)
    values = config_mod.read_yaml(overlay)
    with pytest.raises(ConfigError) as err:
        roots.check_roots(_demo_plus(values))
    placeholders = re.findall(r"/path/to/[\w./-]+", overlay.read_text())
    assert placeholders and all(f": {p} does not exist" in str(err.value) for p in set(placeholders)), err.value
    assert str(err.value).startswith("config key ")
