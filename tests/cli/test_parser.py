"""simcrop.cli.parser: every sub-command is listed and explains itself (also through `python -m simcrop.cli`)."""
import subprocess
import sys

import pytest

from simcrop import cli

SUBCOMMANDS = ["config", "synthesize", "ingest", "preprocess", "gather", "sentences", "pretrain", "export", "zeroshot", "retrieve", "ground", "heatmap", "show",
               "prepare", "probe", "segment", "report", "export-volume"]


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
