"""The ``xasr benchmark`` command: help, a run with a fake recogniser, and user errors without tracebacks."""
import json

import pytest

from tests.benchmark.fake_systems import echo_kind  # noqa: F401 (fixture)
from tests.benchmark.test_testsets import make_kaldi_dir
from xasr.bin.cli import SUBCOMMANDS, main


def test_registered_with_usage(capsys):
    assert SUBCOMMANDS["benchmark"] == "benchmark"
    with pytest.raises(SystemExit) as e:
        main(["benchmark", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "Usage:" in out and "xasr benchmark --system" in out and "faster-whisper:CT2_DIR" in out


def test_run_prints_the_table(tmp_path, capsys, echo_kind):  # noqa: F811
    d = make_kaldi_dir(tmp_path, ["u1 one two three", "u2 four five"])
    out = tmp_path / "bench"
    rc = main(["benchmark", "--system", "ref=echo:x:drop", "--system", "echo:x", "--sets", f"test={d}",
               "--normalizer", "english_word", "--threads", "1", "--resamples", "100", "--out-dir", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| test (WER) | ref | 40.00 |" in printed and "| test (WER) | echo-same | 0.00 |" in printed
    data = json.loads((out / "benchmark.json").read_text())
    assert data["settings"]["reference"] == "ref" and data["settings"]["command"].startswith("xasr ")
    assert [r["system"] for r in data["results"]] == ["ref", "echo-same"]


@pytest.mark.parametrize("args, message", [
    (["--system", "xasr:m:nope"], "unknown decoding method 'nope'"),
    (["--system", "whisper:m"], "unknown system kind 'whisper'"),
    (["--system", "echo:x", "--sets", "test"], "--sets takes NAME=VALUE"),
])
def test_user_errors_exit_1_with_a_message(tmp_path, capsys, echo_kind, args, message):  # noqa: F811
    argv = ["benchmark", "--out-dir", str(tmp_path / "o")] + args
    if "--sets" not in args:
        argv += ["--sets", f"test={tmp_path}"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
