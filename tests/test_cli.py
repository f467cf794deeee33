import subprocess
import sys

import pytest

from simcrop import cli, layout

SUBCOMMANDS = ["config", "synthesize", "ingest", "preprocess", "gather", "sentences", "pretrain", "export", "zeroshot", "retrieve", "ground", "heatmap", "show",
               "prepare", "probe", "segment", "report"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and len(out.splitlines()) > 5


def test_console_script_lists_subcommands():
    result = subprocess.run([sys.executable, "-m", "simcrop.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in SUBCOMMANDS:
        assert command in result.stdout


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


def test_probe_without_a_pretrained_encoder_names_the_file(tmp_path, caplog):
    code = cli.main(["probe", "--set-json", f'{{"results_dir": "{tmp_path}"}}', "--objective", "mae"])
    assert code == 1
    assert str(layout.Run(tmp_path / "demo").encoder("mae")) in caplog.text and "simcrop pretrain" in caplog.text


def test_prepare_of_an_unknown_downstream_set_exits_2(caplog):
    assert cli.main(["prepare", "--dataset", "nope"]) == 2
    assert "'nope' is not configured" in caplog.text
