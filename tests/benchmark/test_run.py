"""run_benchmark end to end with a fake recogniser on a Kaldi directory: files, rows and notes."""
import json
import sys
import types

import pytest

from tests.benchmark.fake_systems import echo_kind  # noqa: F401 (fixture)
from tests.benchmark.test_testsets import make_kaldi_dir
from xasr.benchmark.run import BenchmarkConfig, run_benchmark
from xasr.errors import XasrError


def test_two_systems_on_a_kaldi_dir(tmp_path, echo_kind):  # noqa: F811
    d = make_kaldi_dir(tmp_path, ["u1 It's 2 o'clock.", "u2 HELLO THERE WORLD"])
    out = tmp_path / "bench"
    report = run_benchmark(BenchmarkConfig(
        systems=["echo:x:same", "drop=echo:x:drop"], sets=[f"test={d}"], out_dir=str(out),
        normalizers=["english_word"], reference="drop", threads=1, resamples=200))
    same, drop = report.rows
    # references: IT'S TWO O'CLOCK (3 words), HELLO THERE WORLD (3 words); drop loses one word each
    assert (same.system, same.error_rate, same.num_ref) == ("echo-same", 0.0, 6)
    assert (drop.num_del, drop.num_sub, drop.num_ins, drop.error_rate) == (2, 0, 0, pytest.approx(2 / 6))
    assert same.reference == "drop" and drop.reference is None
    assert same.p_bootstrap == 0.0  # better on every utterance
    assert drop.decode_seconds >= 0 and same.audio_seconds == pytest.approx(2.5)
    for name in ("benchmark.md", "benchmark.json", "benchmark.png", "wer-test-drop.txt", "errs-test-drop.txt",
                 "recogs-test-echo-same.txt", "hyps-test-echo-same.txt"):
        assert (out / name).is_file(), name
    assert (out / "wer-test-drop.txt").read_text().startswith("%WER 33.33 [ 2 / 6, 0 ins, 2 del, 0 sub ]")
    assert (out / "hyps-test-drop.txt").read_text() == "u1\tIt's 2\nu2\tHELLO THERE\n"
    data = json.loads((out / "benchmark.json").read_text())
    assert data["settings"]["reference"] == "drop" and data["settings"]["threads"] == 1
    assert data["sets"][0] == {"name": "test", "path": str(d), "source": "kaldi", "num_utts": 2,
                               "audio_seconds": 2.5, "normalizer": "english_word", "unit": "WER",
                               "language": "en", "chosen": "normalizer given; language from the normalizer"}
    assert [s["load_seconds"] >= 0 for s in data["systems"]] == [True, True]
    assert [s["details"] for s in data["systems"]] == [{"mode": "same"}, {"mode": "drop"}]
    assert "| test (WER) | drop | 33.33 |" in (out / "benchmark.md").read_text()


def _chinese_dir(tmp_path):
    return make_kaldi_dir(tmp_path, ["u1 这个人说", "u2 我们来了"])


def test_traditional_characters_are_reported_not_hidden(tmp_path, echo_kind):  # noqa: F811
    out = tmp_path / "bench"
    report = run_benchmark(BenchmarkConfig(systems=["echo:x:traditional"], sets=[f"test={_chinese_dir(tmp_path)}"],
                                           out_dir=str(out), normalizers=["chinese_char"], resamples=50))
    (row,) = report.rows
    assert (row.unit, row.num_ref, row.num_sub) == ("CER", 8, 5)  # 這 個 說 們 來
    assert row.notes and row.notes[0].startswith("5 of 8 hypothesis Han characters (in 2 utterances) are "
                                                 "traditional forms")
    assert "scored as they are" in row.notes[0]
    assert "traditional forms" in (out / "benchmark.md").read_text()


def test_traditional_characters_converted_on_request(tmp_path, echo_kind, monkeypatch):  # noqa: F811
    with pytest.raises(XasrError, match="needs the opencc package"):
        monkeypatch.setitem(sys.modules, "opencc", None)
        run_benchmark(BenchmarkConfig(systems=["echo:x"], sets=[f"test={_chinese_dir(tmp_path)}"],
                                      out_dir=str(tmp_path / "b0"), normalizers=["chinese_char"],
                                      convert_traditional=True))
    from tests.benchmark.fake_systems import SIMPLIFIED_TO_TRADITIONAL

    back = {t: s for s, t in SIMPLIFIED_TO_TRADITIONAL.items()}
    fake = types.SimpleNamespace(OpenCC=lambda config: types.SimpleNamespace(
        convert=lambda text: "".join(back.get(ch, ch) for ch in text)))
    monkeypatch.setitem(sys.modules, "opencc", fake)
    report = run_benchmark(BenchmarkConfig(systems=["echo:x:traditional"], sets=[f"test={_chinese_dir(tmp_path)}"],
                                           out_dir=str(tmp_path / "b1"), normalizers=["chinese_char"],
                                           convert_traditional=True, resamples=50))
    assert report.rows[0].num_errors == 0 and "converted to simplified" in report.rows[0].notes[0]
    assert any("opencc" in n for n in report.notes)


def test_whisper_language_follows_the_set(tmp_path, echo_kind, monkeypatch):  # noqa: F811
    seen = []
    orig = echo_kind.transcribe
    monkeypatch.setattr(echo_kind, "transcribe", lambda self, cuts, lang: seen.append(lang) or orig(self, cuts, lang))
    zh = _chinese_dir(tmp_path / "zh")
    en = make_kaldi_dir(tmp_path / "en", ["u1 hello", "u2 there"])
    run_benchmark(BenchmarkConfig(systems=["echo:x"], sets=[f"zh={zh}", f"en={en}", f"de={en}"],
                                  out_dir=str(tmp_path / "b"), normalizers=["zh=chinese_char", "en=english_word",
                                                                            "de=none"],
                                  languages=["de=de"], resamples=20))
    assert seen == ["zh", "en", "de"]


def test_bad_configs_fail_before_loading(tmp_path, echo_kind):  # noqa: F811
    d = make_kaldi_dir(tmp_path, ["u1 a", "u2 b"])
    with pytest.raises(XasrError, match="reference system 'x' is not among the systems: echo-same"):
        run_benchmark(BenchmarkConfig(systems=["echo:x"], sets=[f"t={d}"], out_dir=str(tmp_path / "o"),
                                      reference="x", normalizers=["none"], languages=["en"]))
    with pytest.raises(XasrError, match="--threads must be at least 1"):
        run_benchmark(BenchmarkConfig(systems=["echo:x"], sets=[f"t={d}"], out_dir=str(tmp_path / "o"), threads=0))
    with pytest.raises(XasrError, match="unknown echo mode"):
        run_benchmark(BenchmarkConfig(systems=["echo:x:loud"], sets=[f"t={d}"], out_dir=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()
