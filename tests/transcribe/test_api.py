"""The Transcriber on tiny random models: the same text as decoding a training batch, silence
never reaches the model, bad inputs fail alone, batching, stitching of long audio, methods."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from tests.transcribe.conftest import speechlike, with_silences
from xasr.decoding.methods import METHODS, DecodeResult, decode, options_for
from xasr.decoding.speculative import DecodeStats
from xasr.errors import XasrError
from xasr.transcribe.api import Transcriber, join_texts
from xasr.transcribe.vad import VadConfig

SR = 16000
WHOLE = VadConfig(enabled=False, max_segment=30.0)


class Calls:
    """Wraps the decoding function to record the segment durations of each batch ``model`` decodes."""

    def __init__(self, model, monkeypatch):
        import xasr.decoding.methods as methods

        self.batches = []
        inner = methods.decode

        def decode(m, batch, *args, **kwargs):
            if m is model:
                self.batches.append([float(d) for d in batch.durations])
            return inner(m, batch, *args, **kwargs)

        monkeypatch.setattr(methods, "decode", decode)

    @property
    def segments(self) -> int:
        return sum(len(b) for b in self.batches)


@pytest.fixture
def asr(tiny_transcriber):
    tiny_transcriber.vad = VadConfig(detector="energy")  # the signals are speech-like noise
    return tiny_transcriber


def test_whisper_model_gives_the_text_of_a_training_style_batch(tiny_whisper_model_dir, tmp_path):
    from lhotse import CutSet, Recording

    from xasr.data.dataset import AsrDataset

    paths = []
    for k, secs in enumerate([2.5, 1.2, 3.1]):
        paths.append(tmp_path / f"u{k}.wav")
        sf.write(paths[-1], speechlike(secs, seed=k), SR, subtype="PCM_16")
    asr = Transcriber.from_pretrained(str(tiny_whisper_model_dir), threads=1, vad=WHOLE)
    assert asr.features == "whisper_mel"
    ours = asr.transcribe(paths, method="ctc_greedy")
    cuts = CutSet.from_cuts(Recording.from_file(p).to_cut() for p in paths)
    batch = AsrDataset(None, "whisper_mel")[cuts]
    ref = dict(zip(batch.ids, decode(asr.model, batch, "ctc_greedy", asr.units).texts))
    assert [r.text for r in ours] == [ref[f"u{k}"] for k in range(3)]
    assert any(r.text for r in ours)


def test_fbank_model_text_equals_decoding_the_features_directly(asr, tmp_path):
    from xasr.transcribe.batching import feature_function, make_batch

    signals = [speechlike(s, seed=k) for k, s in enumerate([1.5, 2.7, 0.9, 2.2])]
    asr.vad = WHOLE
    ours = asr.transcribe([(x, SR) for x in signals], method="cif_greedy", max_batch_seconds=4.0)
    fb = feature_function("fbank", 80)
    for x, r in zip(signals, ours):
        ref = decode(asr.model, make_batch(["x"], [fb(x)], [len(x) / SR], "fbank"), "cif_greedy", asr.units).texts[0]
        assert r.text == ref and r.segments[0].text == ref
        assert (r.segments[0].start, r.segments[0].end) == (0.0, len(x) / SR)
    assert len({r.text for r in ours}) == 4  # distinct inputs, distinct texts: the check has teeth


def test_silence_and_noise_never_reach_the_model(asr, monkeypatch, tmp_path):
    calls = Calls(asr.model, monkeypatch)
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "silence.wav", np.zeros(3 * SR, np.int16), SR)
    sf.write(tmp_path / "hiss.flac", (rng.standard_normal(4 * 44100) * 10 ** (-62 / 20)), 44100)
    res = asr.transcribe([tmp_path / "silence.wav", tmp_path / "hiss.flac"], method="ctc_greedy")
    assert calls.batches == []
    for r, dur in zip(res, [3.0, 4.0]):
        assert r.ok and r.text == "" and r.segments == [] and r.duration == pytest.approx(dur)
        assert r.timing["decode"] == 0.0


def test_bad_inputs_fail_alone(asr, tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, with_silences([speechlike(1.5)], gap=0.3), SR)
    (tmp_path / "zero.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("hello\n" * 100)
    nan = speechlike(1.0)
    nan[5] = np.nan
    sf.write(tmp_path / "nan.wav", nan, SR, subtype="FLOAT")
    scp = tmp_path / "wav.scp"
    scp.write_text(f"piped cat {good} |\nbroken cat {tmp_path}/gone.flac |\n")
    res = asr.transcribe([good, tmp_path / "missing.wav", tmp_path / "zero.wav", tmp_path / "text.wav",
                          tmp_path / "nan.wav", scp], method="ctc_greedy")
    by_id = {r.id: r for r in res}
    assert [r.id for r in res] == ["good", "missing", "zero", "text", "nan", "piped", "broken"]
    assert by_id["good"].ok and by_id["piped"].ok and by_id["good"].text == by_id["piped"].text
    assert by_id["good"].segments
    expected = {"missing": "missing.wav: no such file", "zero": "zero.wav: the file is empty",
                "text": "text.wav: not a readable audio file", "nan": "nan.wav: 1 NaN or infinite samples",
                "broken": "failed with exit status 1"}
    for uid, msg in expected.items():
        assert not by_id[uid].ok and msg in by_id[uid].error, by_id[uid].error
        assert by_id[uid].text == "" and by_id[uid].segments == []


def test_a_truncated_wav_is_transcribed_with_a_warning_in_the_results(asr, tmp_path):
    import json

    whole = tmp_path / "whole.wav"
    sf.write(whole, with_silences([speechlike(1.5), speechlike(1.5)], gap=0.3), SR, subtype="PCM_16")
    (tmp_path / "cut.wav").write_bytes(whole.read_bytes()[:44 + 2 * SR])
    res = {r.id: r for r in asr.transcribe([whole, tmp_path / "cut.wav"], method="ctc_greedy")}
    assert res["whole"].ok and res["whole"].warnings == []
    assert res["cut"].ok and abs(res["cut"].duration - 1.0) < 1e-6
    assert len(res["cut"].warnings) == 1 and "cut.wav: truncated or damaged WAV" in res["cut"].warnings[0]
    summary = asr.transcribe_to_dir([tmp_path / "cut.wav"], str(tmp_path / "out"), method="ctc_greedy")
    assert summary.with_warnings == 1 and summary.failed == 0
    entry = json.loads((tmp_path / "out/results.jsonl").read_text().splitlines()[0])
    assert "promises" in entry["warnings"][0] and entry["error"] is None


def test_a_segment_the_model_fails_on_fails_only_its_input(asr, monkeypatch):
    import xasr.decoding.methods as methods

    def failing(model, batch, *args, **kwargs):
        if any(abs(float(d) - 2.0) < 1e-6 for d in batch.durations):
            raise RuntimeError("out of memory")
        return decode(model, batch, *args, **kwargs)

    monkeypatch.setattr(methods, "decode", failing)
    asr.vad = WHOLE
    res = asr.transcribe([(speechlike(s, seed=k), SR) for k, s in enumerate([1.0, 2.0, 3.0])], method="cif_greedy")
    assert [r.ok for r in res] == [True, False, True]
    assert res[1].error == "decoding failed (RuntimeError: out of memory)"
    assert res[0].text and res[2].text


def test_batches_are_bounded_and_sorted(asr, monkeypatch):
    calls = Calls(asr.model, monkeypatch)
    lengths = [3.0, 1.0, 5.0, 2.0, 4.0, 1.5, 2.5]
    asr.vad = WHOLE
    res = asr.transcribe([(speechlike(s, seed=k), SR) for k, s in enumerate(lengths)], method="ctc_greedy",
                         max_batch_seconds=6.0)
    assert [r.duration for r in res] == lengths  # input order
    flat = [d for b in calls.batches for d in b]
    assert flat == sorted(lengths, reverse=True)
    assert all(sum(b) <= 6.0 for b in calls.batches) and len(calls.batches) == 4
    for r in res:
        assert set(r.timing) == {"load", "features", "decode"} and r.timing["decode"] > 0


def test_small_chunks_give_the_same_results(asr, monkeypatch):
    from xasr.transcribe.inputs import list_inputs

    signals = [(with_silences([speechlike(1.0 + 0.2 * k, seed=k)], gap=0.3), SR) for k in range(6)]
    ref = {r.id: r.text for r in asr.transcribe(signals, method="cif_greedy")}
    calls = Calls(asr.model, monkeypatch)
    got = list(asr.iter_transcribe(list_inputs(signals), method="cif_greedy", chunk_seconds=2.5))
    assert {r.id: r.text for r in got} == ref
    assert [r.id for r in got] == ["array-1", "array-0", "array-3", "array-2", "array-5", "array-4"]
    assert len(calls.batches) == 3  # one batch per chunk of two inputs


def test_long_audio_is_segmented_and_stitched_in_order(asr, monkeypatch):
    x = with_silences([speechlike(45.0, seed=7), speechlike(4.0, seed=8)], gap=1.0)  # 52 s
    calls = Calls(asr.model, monkeypatch)
    r = asr.transcribe((x, SR), method="cif_greedy")[0]
    segs = r.segments
    assert len(segs) == 4 and calls.segments == 4  # 45 s of speech: 3 pieces of at most 20 s
    assert all(s.end - s.start <= 20.0 for s in segs)
    assert segs[0].start == pytest.approx(0.8, abs=0.02) and segs[2].end == pytest.approx(46.2, abs=0.02)
    assert segs[0].end == segs[1].start and segs[1].end == segs[2].start  # the long run: covered exactly
    assert segs[3].start == pytest.approx(46.8, abs=0.02) and segs[3].end == pytest.approx(51.2, abs=0.02)
    assert r.text == join_texts(s.text for s in segs)
    asr.vad = WHOLE  # each piece alone gives its segment's text
    alone = asr.transcribe([(x[int(round(s.start * SR)):int(round(s.end * SR))], SR) for s in segs],
                           method="cif_greedy")
    assert [a.text for a in alone] == [s.text for s in segs]


def test_arrays_at_other_rates_and_channels(asr):
    x = with_silences([speechlike(2.0, rate=8000)], rate=8000, gap=0.5)
    r = asr.transcribe([(np.stack([x, x], axis=1), 8000)], method="ctc_greedy")[0]
    assert r.ok and r.duration == pytest.approx(3.0) and len(r.segments) == 1
    assert 0.25 < r.segments[0].start < 0.35 and 2.65 < r.segments[0].end < 2.75


def test_methods_are_checked_at_run_time(asr):
    with pytest.raises(XasrError, match="unknown decoding method 'nope'; choose from ctc_greedy"):
        asr.transcribe([(speechlike(1.0), SR)], method="nope")
    with pytest.raises(XasrError, match="llm_greedy needs a model trained with the LLM"):
        asr.transcribe([(speechlike(1.0), SR)], method="llm_greedy")
    # a method registered later is accepted without touching the transcriber
    METHODS.register("new_method")(lambda s: DecodeResult(["new_method"] * s.utterances(), DecodeStats()))
    try:
        assert asr.transcribe([(speechlike(1.0), SR)], method="new_method")[0].text == "new_method"
    finally:
        METHODS.unregister("new_method")


def test_segment_bound_is_checked_against_the_encoder(tiny_whisper_model_dir):
    with pytest.raises(XasrError, match="max segment length 40.0 s exceeds what the encoder accepts"):
        Transcriber.from_pretrained(str(tiny_whisper_model_dir), vad=VadConfig(max_segment=40.0)).transcribe(
            [(speechlike(1.0), SR)], method="ctc_greedy")


def test_join_texts():
    assert join_texts(["hello", " world ", "", "again"]) == "hello world again"
    assert join_texts(["今天", "天气", "ok"]) == "今天天气 ok"


@pytest.mark.slow
def test_llm_methods(tiny_llm_model_dir):
    asr = Transcriber.from_pretrained(str(tiny_llm_model_dir), threads=1, vad=VadConfig(detector="energy"))
    x = with_silences([speechlike(1.5, seed=1), speechlike(2.0, seed=2)], gap=1.0)
    for method in ("llm_greedy", "llm_beam"):
        r = asr.transcribe([(x, SR)], method=method)[0]
        assert r.ok and len(r.segments) == 2 and r.text == join_texts(s.text for s in r.segments)


@pytest.mark.slow
def test_every_method_gives_the_same_text_alone_and_in_a_padded_batch(tiny_llm_model_dir):
    """Utterances of mixed lengths decoded one at a time and all in one batch (padding up to
    the longest) give the same texts and the same no_speech_prob, for every decoding method."""
    from xasr.decoding.methods import DECODING_METHODS

    asr = Transcriber.from_pretrained(str(tiny_llm_model_dir), threads=1, vad=WHOLE)
    inputs = [(speechlike(d, seed=i), SR) for i, d in enumerate([0.6, 2.3, 1.1, 3.0, 1.7])]
    for method in DECODING_METHODS:
        calls = Calls(asr.model, pytest.MonkeyPatch())
        alone = asr.transcribe(inputs, method=method, max_batch_seconds=0.1)
        assert [len(b) for b in calls.batches] == [1] * len(inputs)
        calls.batches.clear()
        together = asr.transcribe(inputs, method=method, max_batch_seconds=100.0)
        assert [len(b) for b in calls.batches] == [len(inputs)], method
        assert [r.text for r in together] == [r.text for r in alone], method
        for a, b in zip(alone, together):
            assert a.ok and 0.0 <= a.segments[0].no_speech_prob <= 1.0
            assert b.segments[0].no_speech_prob == pytest.approx(a.segments[0].no_speech_prob, rel=1e-4, abs=1e-9)


@pytest.mark.slow
def test_the_decoding_a_recipe_saved_is_the_default_and_reproduces_its_decode_output(tiny_whisper_model_dir,
                                                                                      tiny_units, tmp_path):
    """decoding.json (what the recipe's stage 7 writes with --save-decoding) makes llm_rescore at
    the tuned weights the model's default: transcribe gives the texts that the recipe's decoding
    of the same cuts gives with those weights."""
    from lhotse import CutSet, Recording

    from tests.models.tiny_llm import make_tiny_llm
    from tests.transcribe.conftest import make_model_dir
    from xasr.decoding.dataset_decode import decode_cuts
    from xasr.model_dir import load_model_dir, read_decoding, save_decoding

    # the recipes' kind of model: a Whisper encoder (features computed from the audio) and an LLM
    plain = make_model_dir(tmp_path / "plain", tiny_units, llm_dir=make_tiny_llm(tmp_path / "llm"),
                           whisper_dir=tiny_whisper_model_dir.parent / "whisper")
    model_dir = tmp_path / "model"
    make_model_dir(model_dir, tiny_units, llm_dir=tmp_path / "llm",
                   whisper_dir=tiny_whisper_model_dir.parent / "whisper")
    assert Transcriber.from_pretrained(str(model_dir), threads=1).default_method == "llm_greedy"
    save_decoding(str(model_dir), "llm_rescore", {"rescore_ctc_weight": 0.7, "rescore_length_bonus": -1.5,
                                                   "llm_vocab": "units"}, tuned_on="dev")
    assert read_decoding(str(model_dir))["tuned_on"] == "dev"
    assert load_model_dir(str(model_dir))[0].cfg.llm_vocab == "units"
    paths = []
    for k, secs in enumerate([1.4, 2.6, 0.8]):
        paths.append(tmp_path / f"u{k}.wav")
        sf.write(paths[-1], speechlike(secs, seed=k), SR, subtype="PCM_16")
    asr = Transcriber.from_pretrained(str(model_dir), threads=1, vad=WHOLE)
    assert asr.default_method == "llm_rescore" and asr.settings("llm_rescore")["rescore"] == \
        {"ctc_weight": 0.7, "length_bonus": -1.5}
    ours = asr.transcribe(paths)

    model, cfg, units = load_model_dir(str(plain))  # the same weights, no decoding.json: set by hand
    cuts = CutSet.from_cuts(Recording.from_file(p).to_cut() for p in paths)
    ref = decode_cuts(model, units, cuts, "llm_rescore", cfg.data.features, 60.0, "cpu",
                      opts=options_for(model, llm_vocab="units").with_ctc_weights(0.7, -1.5))
    assert [r.text for r in ours] == [ref[f"u{k}"] for k in range(3)]
    other = decode_cuts(model, units, cuts, "llm_rescore", cfg.data.features, 60.0, "cpu",
                        opts=options_for(model).with_ctc_weights(0.0, 0.0))
    assert other != ref  # the weights matter here: the check has teeth
    with pytest.raises(XasrError, match="unknown decoding method"):
        save_decoding(str(model_dir), "llm_rescor", {})


def test_the_package_exports_the_api_lazily():
    import subprocess
    import sys

    code = ("import sys, xasr; light = 'torch' not in sys.modules; T = xasr.Transcriber; "
            "print(light, 'torch' not in sys.modules, T.__name__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["True", "True", "Transcriber"]  # torch loads with the model, not before


def test_word_timestamps_lie_in_their_segments_and_spell_its_text(asr, tmp_path):
    import json

    x = with_silences([speechlike(1.5, seed=1), speechlike(2.0, seed=2)], gap=1.0)
    asr.word_timestamps = True
    try:
        r = asr.transcribe([(x, SR)], method="ctc_greedy")[0]
        asr.transcribe_to_dir([(x, SR)], str(tmp_path / "out"), method="ctc_greedy", formats=["json"],
                              progress=False)
    finally:
        asr.word_timestamps = False
    assert len(r.segments) == 2 and all(seg.words for seg in r.segments)  # the tiny model writes something
    for seg in r.segments:
        words = seg.words
        assert [w["word"] for w in words] == seg.text.split()
        for w in words:
            assert seg.start - 1e-3 <= w["start"] <= w["end"] <= seg.end + 1e-3 and 0 <= w["probability"] <= 1
        assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    saved = json.loads((tmp_path / "out/json/array-0.json").read_text())
    assert saved["segments"][1]["words"] == r.segments[1].words
    assert json.loads((tmp_path / "out/settings.json").read_text())["word_timestamps"] is True
    assert "words" not in asr.transcribe([(x, SR)], method="ctc_greedy")[0].to_dict()["segments"][0]
