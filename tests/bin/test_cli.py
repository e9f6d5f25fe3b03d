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


def test_prepare_download_only_fetches_and_writes_no_manifests(tmp_path, monkeypatch, capsys):
    import xasr.bin.prepare as prepare

    fetched, prepared = [], []
    monkeypatch.setattr(prepare, "download_corpus", lambda corpus, d: fetched.append((corpus, d)) or tmp_path)
    monkeypatch.setattr(prepare, "prepare_manifests", lambda *a, **k: prepared.append(a))
    assert main(["prepare", "--corpus", "aishell", "--corpus-dir", str(tmp_path), "--download-only"]) == 0
    assert fetched == [("aishell", str(tmp_path))] and prepared == []
    assert main(["prepare", "--corpus", "aishell", "--corpus-dir", str(tmp_path)]) == 1
    assert "--output-dir is needed" in capsys.readouterr().err and fetched == [("aishell", str(tmp_path))]


def test_console_script_is_installed():
    from pathlib import Path
    assert (Path(sys.executable).parent / "xasr").is_file()
    assert build_parser().prog == "xasr"


@pytest.mark.parametrize("extra, message", [
    (["--methods", "ctc_greedy", "--tune-rescore-on", "dev"], "add llm_rescore to --methods"),
    (["--methods", "llm_rescore", "--tune-rescore-on", "valid"], "no such set among --cuts (dev)"),
    (["--methods", "llm_rescore", "--ctc-weight", "2"], "--ctc-weight must be in [0, 1]"),
    (["--methods", "ctc_greedy", "llm_greedyy"], "--methods: unknown decoding method 'llm_greedyy'"),
    (["--methods", "ctc_beam", "--lm-weight", "-1"], "--lm-weight must be >= 0"),
])
def test_decode_refuses_bad_rescoring_options_before_loading_anything(tmp_path, capsys, extra, message):
    assert main(["decode", "--model-dir", str(tmp_path / "none"), "--cuts", "dev=x.jsonl.gz",
                 "--out-dir", str(tmp_path / "out"), *extra]) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--normalizer", "english_wrd"], "--normalizer: unknown normalizer 'english_wrd'"),
    (["--max-duration", "0"], "--max-duration must be > 0, not 0.0"),
    (["--repeat-ngram", "-2"], "--repeat-ngram (0: off) must be >= 0, not -2"),
    (["--cuts", "dev=missing.jsonl.gz"], "--cuts dev=missing.jsonl.gz: no such cut manifest"),
    ([], "--model-dir {tmp}/none: no such model directory"),
])
def test_decode_checks_values_and_paths_before_loading_anything(tmp_path, capsys, extra, message):
    cuts = tmp_path / "dev.jsonl.gz"
    cuts.write_bytes(b"")
    args = ["decode", "--model-dir", str(tmp_path / "none"), "--cuts", f"dev={cuts}", "--out-dir",
            str(tmp_path / "out"), "--methods", "ctc_greedy"]
    if extra[:1] == ["--cuts"]:
        args[args.index("--cuts") + 1] = extra[1]
        extra = []
    assert main(args + extra) == 1
    assert message.format(tmp=tmp_path) in capsys.readouterr().err


def test_transcribe_checks_the_model_dir_and_numbers_before_loading(tmp_path, capsys):
    (tmp_path / "half").mkdir()
    (tmp_path / "half/config.yaml").write_text("model: {}\n")
    assert main(["transcribe", "--model-dir", str(tmp_path / "half"), "--method", "ctc_greedy", "a.wav"]) == 1
    assert "is not an xasr model directory: model.safetensors is missing" in capsys.readouterr().err
    assert main(["transcribe", "--model-dir", str(tmp_path / "half"), "--max-segment", "-1", "a.wav"]) == 1
    assert "--max-segment must be > 0, not -1.0" in capsys.readouterr().err


def test_transcribe_refuses_an_unknown_method_before_loading_the_model(tmp_path, capsys):
    # the model directory does not exist: the method is what must be named
    assert main(["transcribe", "--model-dir", str(tmp_path / "none"), "--method", "llm_gredy", "a.wav"]) == 1
    err = capsys.readouterr().err
    assert "--method: unknown decoding method 'llm_gredy'" in err and "none" not in err.split("ERROR")[-1][:40]
