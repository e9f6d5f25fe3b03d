import subprocess
import sys

import pytest

from xasr.bin.cli import SUBCOMMANDS, build_parser, main


def test_every_subcommand_has_usage_and_help(capsys):
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "Usage:" in out and f"xasr {name}" in out


def test_user_errors_exit_1_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "xasr.bin.cli", "prepare", "--corpus", "aishell",
                        "--corpus-dir", str(tmp_path), "--output-dir", str(tmp_path / "m")],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "data_aishell does not exist" in r.stderr and "Traceback" not in r.stderr


def test_console_script_is_installed():
    from pathlib import Path
    assert (Path(sys.executable).parent / "xasr").is_file()
    assert build_parser().prog == "xasr"
