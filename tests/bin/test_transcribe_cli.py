"""`xasr transcribe`: outputs, exit status 2 when some inputs fail, stdout mode, usage errors."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import soundfile as sf

from tests.transcribe.conftest import speechlike, tiny_model_dir, tiny_units, with_silences  # noqa: F401 (fixtures)
from xasr.bin.cli import main

SR = 16000  # the audio below is speech-like noise: the energy VAD (not Silero) takes it for speech


@pytest.fixture
def audio(tmp_path):
    d = tmp_path / "audio"
    d.mkdir()
    for k in range(3):
        sf.write(d / f"u{k}.flac", with_silences([speechlike(1.0 + k * 0.5, seed=k)], gap=0.5), SR)
    return d


def test_writes_outputs_and_exits_2_when_an_input_fails(tiny_model_dir, audio, tmp_path, capsys):
    (audio / "broken.wav").write_bytes(b"RIFF....WAVEfmt nonsense")
    out = tmp_path / "out"
    rc = main(["transcribe", "--model-dir", str(tiny_model_dir), "--vad", "energy", "--method", "cif_greedy", "--out-dir", str(out),
               "--srt", "--no-progress", "--threads", "1", str(audio)])
    assert rc == 2
    entries = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [e["id"] for e in entries] == ["broken", "u0", "u1", "u2"]
    assert "broken.wav: not a readable audio file" in entries[0]["error"]
    assert "broken.wav: not a readable audio file" in capsys.readouterr().err  # the log
    assert len((out / "text").read_text().splitlines()) == 3
    assert sorted(p.name for p in (out / "srt").iterdir()) == ["u0.srt", "u1.srt", "u2.srt"]
    (audio / "broken.wav").unlink()  # fixed: the rerun redoes only that one, and succeeds
    assert main(["transcribe", "--model-dir", str(tiny_model_dir), "--vad", "energy", "--method", "cif_greedy", "--out-dir", str(out),
                 "--no-progress", str(audio)]) == 0
    assert [json.loads(line)["id"] for line in (out / "results.jsonl").read_text().splitlines()] == ["u0", "u1", "u2"]


def test_prints_kaldi_lines_without_out_dir(tiny_model_dir, audio, capsys):
    rc = main(["transcribe", "--model-dir", str(tiny_model_dir), "--vad", "energy", "--method", "ctc_greedy", "--no-progress",
               str(audio / "u1.flac"), str(audio / "u0.flac")])
    assert rc == 0
    out = capsys.readouterr().out.splitlines()
    assert sorted(line.split()[0] for line in out) == ["u0", "u1"]


def test_usage_errors_exit_1(tiny_model_dir, audio, tmp_path, capsys):
    cases = [(["--method", "beam9"], "unknown decoding method 'beam9'"), (["--srt"], "--srt needs --out-dir"),
             (["--output-format", "txt"], "--output-format needs --out-dir"),
             (["--output-format", "docx", "--out-dir", str(tmp_path / "o")], "unknown format 'docx'"),
             (["--max-segment", "0.05"], "too short for the encoder"), (["--device", "tpu"], "use cpu, cuda")]
    for extra, message in cases:
        assert main(["transcribe", "--model-dir", str(tiny_model_dir), "--vad", "energy", *extra, str(audio)]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert main(["transcribe", "--model-dir", str(tmp_path), str(audio)]) == 1
    assert "is not an xasr model directory" in capsys.readouterr().err


def test_paths_from_stdin_and_output_formats(tiny_model_dir, audio, tmp_path, monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{audio}/u0.flac\n\n{audio}/u2.flac\n"))
    out = tmp_path / "out"
    assert main(["transcribe", "--model-dir", str(tiny_model_dir), "--vad", "energy", "--method", "cif_greedy", "--out-dir", str(out),
                 "--output-format", "txt,vtt", "--output-format", "srt", "--output-format", "tsv,json", "--no-progress",
                 "-", str(audio / "u1.flac")]) == 0
    ids = [json.loads(line)["id"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert ids == ["u0", "u2", "u1"]  # stdin's paths where - stands, in order
    for fmt in ("txt", "vtt", "srt", "tsv", "json"):
        assert sorted(p.name for p in (out / fmt).iterdir()) == [f"u{k}.{fmt}" for k in range(3)]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    assert main(["transcribe", "--model-dir", str(tiny_model_dir), "--vad", "energy", "-"]) == 1


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")
def test_console_script_with_a_wav_scp_of_pipes(tiny_model_dir, audio, tmp_path):
    scp = tmp_path / "wav.scp"
    scp.write_text(f"a sox {audio}/u0.flac -r 8000 -t wav - |\nb sox {audio}/missing.flac -t wav - |\n")
    xasr = shutil.which("xasr", path=str(sys.executable).rsplit("/", 1)[0])
    r = subprocess.run([xasr, "transcribe", "--model-dir", str(tiny_model_dir), "--vad", "energy", "--method", "ctc_greedy",
                        "--out-dir", str(tmp_path / "out"), "--threads", "1", str(scp)],
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert "resampling 8000 Hz audio to 16000 Hz" in r.stderr
    assert "s audio/s" in r.stderr  # the progress bar counts seconds of audio per second
    entries = {e["id"]: e for e in map(json.loads, (tmp_path / "out/results.jsonl").read_text().splitlines())}
    assert entries["a"]["error"] is None and entries["a"]["duration"] == pytest.approx(2.0)
    assert "failed with exit status 2" in entries["b"]["error"]
