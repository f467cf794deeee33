"""simcrop.cli.evaluate_commands: probe with no pre-trained encoder fails in one line naming the file."""
from simcrop import cli, layout


def test_probe_without_a_pretrained_encoder_names_the_file(tmp_path, caplog):
    code = cli.main(["probe", "--set-json", f'{{"results_dir": "{tmp_path}"}}', "--objective", "mae"])
    assert code == 1
    assert str(layout.Run(tmp_path / "demo").encoder("mae")) in caplog.text and "simcrop pretrain" in caplog.text
