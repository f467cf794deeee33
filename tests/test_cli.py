import subprocess
import sys

import pytest

from simcrop import cli, layout

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


def test_export_volume_writes_a_cached_volume_as_nifti(tmp_path, caplog):
    """`simcrop export-volume <cached> <out.nii.gz>`: the .b2nd training cache → NIfTI with its affine, for
    3D Slicer / ITK-SNAP; a file that is no preprocessed volume fails in one line."""
    import nibabel as nib
    import numpy as np

    from simcrop.data.preprocessed_io import write_cache

    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    affine[:3, 3] = [-150.0, -140.0, -310.0]
    image = np.arange(12 * 10 * 6, dtype=np.int16).reshape(12, 10, 6) - 300
    write_cache(tmp_path / "v.b2nd", image, affine)
    assert cli.main(["export-volume", str(tmp_path / "v.b2nd"), str(tmp_path / "v.nii.gz")]) == 0
    out = nib.load(tmp_path / "v.nii.gz")
    assert np.array_equal(np.asanyarray(out.dataobj), image) and np.allclose(out.affine, affine)
    (tmp_path / "bad.b2nd").write_bytes(b"junk")
    assert cli.main(["export-volume", str(tmp_path / "bad.b2nd"), str(tmp_path / "bad.nii.gz")]) == 1
    assert "bad.b2nd: unreadable training cache" in caplog.text and not (tmp_path / "bad.nii.gz").exists()
    assert cli.main(["export-volume", str(tmp_path / "gone.b2nd"), str(tmp_path / "gone.nii.gz")]) == 1
