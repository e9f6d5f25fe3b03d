"""Test sets: Kaldi data directories (files, commands, segments), cut manifests, normalizer and language."""
import logging

import numpy as np
import pytest
import soundfile as sf

from xasr.benchmark.testsets import TestSetError, load_kaldi_dir, load_test_set, per_set_values
from xasr.errors import XasrError
from xasr.utils.named import parse_named


def _wav(path, seconds, rate=16000, seed=0):
    rng = np.random.default_rng(seed)
    sf.write(str(path), (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32), rate)
    return path


def make_kaldi_dir(root, lines_text, wav_lines=None, segments=None):
    d = root / "data"
    d.mkdir(parents=True, exist_ok=True)
    if wav_lines is None:
        wav_lines = [f"u1 {_wav(root / 'u1.wav', 1.0)}", f"u2 {_wav(root / 'u2.wav', 1.5, seed=1)}"]
    (d / "wav.scp").write_text("\n".join(wav_lines) + "\n")
    (d / "text").write_text("\n".join(lines_text) + "\n", encoding="utf-8")
    if segments is not None:
        (d / "segments").write_text("\n".join(segments) + "\n")
    return d


def test_kaldi_dir_with_files_and_a_command(tmp_path):
    w3 = _wav(tmp_path / "u3.wav", 0.5, rate=8000, seed=2)
    wav_lines = [f"u1 {_wav(tmp_path / 'u1.wav', 1.0)}", f"u3 cat {w3} |"]
    d = make_kaldi_dir(tmp_path, ["u1 hello world", "u3 你好，世界"], wav_lines)
    ts = load_test_set("test", str(d), normalizer="chinese_char")
    assert ts.source == "kaldi" and ts.refs == {"u1": "hello world", "u3": "你好，世界"}
    assert (ts.normalizer, ts.unit, ts.language) == ("chinese_char", "CER", "zh")
    assert ts.audio_seconds == pytest.approx(1.5)
    cuts = {c.id: c for c in ts.cuts}
    assert cuts["u3"].sampling_rate == 16000  # resampled for Whisper
    assert cuts["u3"].load_audio().shape == (1, 8000)
    assert cuts["u1"].load_audio().shape == (1, 16000)
    assert ts.info()["num_utts"] == 2


def test_kaldi_dir_with_segments(tmp_path):
    w = _wav(tmp_path / "long.wav", 3.0)
    d = make_kaldi_dir(tmp_path, ["s1 one two", "s2 three"], [f"rec {w}"],
                       segments=["s1 rec 0.0 1.25", "s2 rec 1.5 3.0"])
    cuts = {c.id: c for c in load_kaldi_dir(str(d))}
    assert cuts["s1"].duration == pytest.approx(1.25) and cuts["s2"].start == pytest.approx(1.5)
    assert cuts["s2"].load_audio().shape == (1, 24000)
    assert cuts["s2"].supervisions[0].text == "three"


def test_kaldi_dir_problems_are_named(tmp_path, caplog):
    with pytest.raises(TestSetError, match="text is missing"):
        (tmp_path / "x").mkdir()
        (tmp_path / "x/wav.scp").write_text("u1 a.wav\n")
        load_kaldi_dir(str(tmp_path / "x"))
    d = make_kaldi_dir(tmp_path / "a", ["u1 hello", "u9 lost"])
    with pytest.raises(TestSetError, match="1 utterance\\(s\\) have no audio in wav.scp: u9"):
        load_kaldi_dir(str(d))
    d = make_kaldi_dir(tmp_path / "b", ["u1 hello"])
    with caplog.at_level(logging.WARNING):
        cuts = load_kaldi_dir(str(d))
    assert [c.id for c in cuts] == ["u1"] and "audio but no line in text and are skipped: u2" in caplog.text
    d = make_kaldi_dir(tmp_path / "c", ["u1 hi"], ["u1 /no/such/file.wav"])
    with pytest.raises(TestSetError, match="audio file /no/such/file.wav of u1 does not exist"):
        load_kaldi_dir(str(d))
    d = make_kaldi_dir(tmp_path / "d", ["u1 hi"], ["u1 false |"])
    with pytest.raises(TestSetError, match="the command for u1 failed"):
        load_kaldi_dir(str(d))
    w = _wav(tmp_path / "r.wav", 1.0)
    d = make_kaldi_dir(tmp_path / "e", ["s1 hi"], [f"rec {w}"], segments=["s1 rec 0.5 4.0"])
    with pytest.raises(TestSetError, match="s1 spans 0.5-4.0 s, outside its recording rec"):
        load_kaldi_dir(str(d))
    # a Kaldi dir names no language: the normalizer must be given
    d = make_kaldi_dir(tmp_path / "f", ["u1 hi", "u2 there"])
    with pytest.raises(TestSetError, match="give --normalizer"):
        load_test_set("t", str(d))
    with pytest.raises(TestSetError, match="cannot tell its language: give --language t=CODE"):
        load_test_set("t", str(d), normalizer="none")
    assert load_test_set("t", str(d), normalizer="none", language="de").language == "de"
    with pytest.raises(TestSetError, match="neither a cut manifest nor a Kaldi data directory"):
        load_test_set("t", str(tmp_path / "nothing"))


def _manifest(tmp_path, language, audio=True):
    from lhotse import CutSet, Recording, SupervisionSegment

    cuts = []
    for i in range(3):
        rec = Recording.from_file(_wav(tmp_path / f"r{i}.wav", 1.0 + i, seed=i), recording_id=f"r{i}")
        cut = rec.to_cut()
        cut.supervisions = [SupervisionSegment(id=f"r{i}", recording_id=f"r{i}", start=0, duration=rec.duration,
                                               text=f"WORD {i}", language=language)]
        cuts.append(cut)
    path = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    if not audio:
        (tmp_path / "r1.wav").unlink()
    return path


def test_cut_manifest_normalizer_from_the_language(tmp_path):
    ts = load_test_set("test", str(_manifest(tmp_path, "English")))
    assert (ts.source, ts.normalizer, ts.unit, ts.language) == ("cuts", "english_word", "WER", "en")
    assert "supervisions' language (en)" in ts.how
    assert ts.refs["r2"] == "WORD 2" and ts.audio_seconds == pytest.approx(6.0)
    assert load_test_set("test", str(tmp_path / "cuts.jsonl.gz"), max_utts=2).num_utts == 2
    zh = load_test_set("test", str(tmp_path / "cuts.jsonl.gz"), normalizer="chinese_char")
    assert zh.language == "zh" and zh.how == "normalizer given; language from the normalizer"
    with pytest.raises(TestSetError, match="unknown normalizer 'kanji'"):
        load_test_set("test", str(tmp_path / "cuts.jsonl.gz"), normalizer="kanji")


def test_cut_manifest_with_missing_audio(tmp_path):
    path = _manifest(tmp_path, "Chinese", audio=False)
    with pytest.raises(TestSetError, match="r1.wav of cut .* does not exist .*run from there"):
        load_test_set("test", str(path))


def test_named_values():
    assert parse_named(["a=x", "b=y=z"], "--sets") == {"a": "x", "b": "y=z"}
    for bad in (["a"], ["=x"], ["a="]):
        with pytest.raises(XasrError, match="--sets takes NAME=VALUE"):
            parse_named(bad, "--sets")
    with pytest.raises(XasrError, match="'a' is given twice"):
        parse_named(["a=x", "a=y"], "--sets")
    assert per_set_values(["english_word"], ["dev", "test"], "--normalizer", "auto") == {
        "dev": "english_word", "test": "english_word"}
    assert per_set_values(["test=chinese_char"], ["dev", "test"], "--normalizer", "auto") == {
        "dev": "auto", "test": "chinese_char"}
    with pytest.raises(TestSetError, match="unknown test set\\(s\\) eval; the sets are dev, test"):
        per_set_values(["eval=none"], ["dev", "test"], "--normalizer", "auto")
