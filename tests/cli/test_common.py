"""simcrop.cli.common: the `config` command writes the merged config; a bad key exits 2 naming it."""
from simcrop import cli


def test_config_command_writes_resolved_config(tmp_path, repo_root):
    out = tmp_path / "resolved.yaml"
    code = cli.main(["config", "--config", str(repo_root / "config" / "config.yaml"),
                     "--set-json", '{"preprocess": {"shard_size": 3}}', "--out", str(out)])
    assert code == 0
    assert "shard_size: 3" in out.read_text()


def test_bad_config_exits_2_with_the_key(caplog):
    code = cli.main(["config", "--set-json", '{"preprocess": {"spacng": [1, 1, 1]}}'])
    assert code == 2
    assert "preprocess.spacng" in caplog.text
