"""Output files (results.jsonl, Kaldi text, SRT), written as inputs finish, and resuming."""
from __future__ import annotations

import json

import pytest
import soundfile as sf

from tests.transcribe.conftest import speechlike, with_silences
from tests.transcribe.test_api import Calls
from xasr.errors import XasrError
from xasr.transcribe.vad import VadConfig
from xasr.transcribe.writers import kaldi_line, read_results, srt_text, srt_time

SR = 16000


@pytest.fixture
def asr(tiny_transcriber):
    tiny_transcriber.vad = VadConfig(detector="energy")  # the signals are speech-like noise
    return tiny_transcriber


def make_files(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        x = with_silences([speechlike(1.0 + 0.3 * k, seed=k)], gap=0.4)
        sf.write(folder / f"utt{k:02d}.wav", x, SR)
    return folder


def lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def test_outputs(asr, tmp_path):
    audio = make_files(tmp_path / "audio", 3)
    (audio / "bad.wav").write_text("not audio")
    s = asr.transcribe_to_dir([audio], str(tmp_path / "out"), method="cif_greedy", srt=True, progress=False)
    assert (s.inputs, s.transcribed, s.failed, s.skipped) == (4, 3, 1, 0)
    out = tmp_path / "out"
    entries = [json.loads(line) for line in lines(out / "results.jsonl")]
    assert [e["id"] for e in entries] == ["bad", "utt00", "utt01", "utt02"]  # input order (sorted listing)
    bad, first = entries[0], entries[1]
    assert "bad.wav: not a readable audio file" in bad["error"] and bad["text"] == ""
    assert set(first) == {"id", "path", "text", "duration", "segments", "timing", "error", "warnings"}
    assert first["error"] is None and first["warnings"] == [] and first["path"] == str(audio / "utt00.wav")
    assert first["duration"] == pytest.approx(1.8) and set(first["timing"]) == {"load", "features", "decode"}
    seg = first["segments"][0]
    assert seg["start"] == pytest.approx(0.19, abs=0.02) and seg["end"] == pytest.approx(1.61, abs=0.02)
    assert 0.0 <= seg["no_speech_prob"] <= 1.0
    assert lines(out / "text") == [kaldi_line(e).rstrip("\n") for e in entries[1:]]
    start, end = (int(round(seg[k] * 1000)) for k in ("start", "end"))
    assert (out / "srt/utt00.srt").read_text() == \
        f"1\n00:00:00,{start:03d} --> 00:00:01,{end - 1000:03d}\n{seg['text']}\n"
    assert not (out / "srt/bad.srt").exists()
    settings = json.loads((out / "settings.json").read_text())
    assert settings["method"] == "cif_greedy" and settings["vad"]["max_segment"] == 20.0


def test_interrupted_run_resumes_without_redoing_finished_inputs(asr, tmp_path, monkeypatch):
    n, k = 7, 3
    audio = make_files(tmp_path / "audio", n)
    out = tmp_path / "out"
    calls = Calls(asr.model, monkeypatch)
    asr.transcribe_to_dir([audio], str(out), method="cif_greedy", max_batch_seconds=3.0, progress=False)
    assert calls.segments == n
    full = [json.loads(line) for line in lines(out / "results.jsonl")]
    full_text = (out / "text").read_text()

    # as if killed after k inputs, in the middle of writing the next line
    jl = lines(out / "results.jsonl")
    (out / "results.jsonl").write_text("\n".join(jl[:k]) + "\n" + jl[k][:25])
    (out / "text").write_text("".join(line + "\n" for line in lines(out / "text")[:k]))
    calls.batches.clear()
    s = asr.transcribe_to_dir([audio], str(out), method="cif_greedy", max_batch_seconds=3.0, progress=False)
    assert calls.segments == n - k and (s.skipped, s.transcribed) == (k, n - k)
    again = [json.loads(line) for line in lines(out / "results.jsonl")]
    assert [(e["id"], e["text"], e["segments"]) for e in again] == [(e["id"], e["text"], e["segments"])
                                                                    for e in full]
    assert (out / "text").read_text() == full_text

    calls.batches.clear()  # a finished directory: nothing to do
    asr.transcribe_to_dir([audio], str(out), method="cif_greedy", progress=False)
    assert calls.segments == 0
    asr.transcribe_to_dir([audio], str(out), method="cif_greedy", overwrite=True, progress=False)
    assert calls.segments == n


def test_failed_inputs_are_tried_again_and_settings_must_match(asr, tmp_path, monkeypatch):
    audio = make_files(tmp_path / "audio", 2)
    scp = tmp_path / "wav.scp"
    scp.write_text(f"a {audio}/utt00.wav\nb {audio}/later.wav\n")
    out = str(tmp_path / "out")
    s = asr.transcribe_to_dir([scp], out, method="ctc_greedy", progress=False)
    assert (s.transcribed, s.failed) == (1, 1)
    (audio / "utt01.wav").rename(audio / "later.wav")  # the missing file appears
    calls = Calls(asr.model, monkeypatch)
    s = asr.transcribe_to_dir([scp], out, method="ctc_greedy", progress=False)
    assert (s.skipped, s.transcribed, s.failed) == (1, 1, 0) and calls.segments == 1
    entries, bad = read_results(tmp_path / "out/results.jsonl")
    assert [e["error"] for e in entries] == [None, None] and bad == 0
    with pytest.raises(XasrError, match="other settings \\(method: method was 'ctc_greedy', now 'cif_greedy'\\)"):
        asr.transcribe_to_dir([scp], out, method="cif_greedy", progress=False)


def test_srt_format():
    assert srt_time(3725.5) == "01:02:05,500" and srt_time(0.0004) == "00:00:00,000"
    segs = [{"start": 0.5, "end": 2.25, "text": "one"}, {"start": 3, "end": 4, "text": " \n"},
            {"start": 61.0, "end": 62.001, "text": "two\n\nlines"}]
    assert srt_text(segs) == ("1\n00:00:00,500 --> 00:00:02,250\none\n\n"
                              "2\n00:01:01,000 --> 00:01:02,001\ntwo lines\n")
    assert kaldi_line({"id": "a", "text": "x\ny  z "}) == "a x y z\n"
    assert kaldi_line({"id": "a", "text": ""}) == "a\n"



def test_each_output_format_of_an_entry():
    from xasr.transcribe.writers import format_entry, output_formats

    entry = {"id": "talk", "text": "hello there world", "segments": [
        {"start": 0.2, "end": 1.5, "text": "hello there"}, {"start": 2.0, "end": 2.5, "text": ""},
        {"start": 3661.0044, "end": 3662.5, "text": " world\n"}]}
    assert format_entry(entry, "txt") == "hello there\nworld\n"
    assert format_entry(entry, "srt") == ("1\n00:00:00,200 --> 00:00:01,500\nhello there\n\n"
                                          "2\n01:01:01,004 --> 01:01:02,500\nworld\n")
    assert format_entry(entry, "vtt") == ("WEBVTT\n\n00:00:00.200 --> 00:00:01.500\nhello there\n\n"
                                          "01:01:01.004 --> 01:01:02.500\nworld\n\n")
    assert format_entry(entry, "tsv") == "start\tend\ttext\n200\t1500\thello there\n3661004\t3662500\tworld\n"
    assert json.loads(format_entry(entry, "json")) == entry
    assert output_formats(["all"]) == ["txt", "vtt", "srt", "tsv", "json"]
    assert output_formats(["json", "srt"]) == ["srt", "json"]
    with pytest.raises(XasrError, match="unknown format 'docx'"):
        output_formats(["docx"])


def test_output_formats_are_written_per_input_and_added_on_resume(asr, tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    for k in range(2):
        sf.write(audio / f"utt{k}.wav", with_silences([speechlike(1.0, seed=k)], gap=0.3), SR)
    out = tmp_path / "out"
    asr.transcribe_to_dir([audio], str(out), method="cif_greedy", formats=["txt", "json"], progress=False)
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/*")) == [
        "json/utt0.json", "json/utt1.json", "txt/utt0.txt", "txt/utt1.txt"]
    entry = json.loads((out / "json/utt0.json").read_text())
    assert entry["id"] == "utt0" and (out / "txt/utt0.txt").read_text().strip() == entry["text"]
    # a second run with more formats writes them for the inputs kept, redoing no decoding
    s = asr.transcribe_to_dir([audio], str(out), method="cif_greedy", formats=["all"], progress=False)
    assert s.skipped == 2 and s.transcribed == 0
    for fmt in ("vtt", "srt", "tsv"):
        assert (out / fmt / f"utt1.{fmt}").is_file()
    assert (out / "vtt/utt1.vtt").read_text().startswith("WEBVTT\n")
