"""A 5-minute recording made of corpus utterances separated by 1 s of silence must give the
per-utterance transcripts, in order, with segment times pointing at the right utterance.

The VAD here uses only its absolute threshold (the relative and noise-floor rules depend on
the whole file's statistics), so its decisions on an utterance are the same whether the
utterance stands alone (with 0.5 s of silence on each side) or sits inside the long file; a
4-s segment bound makes the longer utterances split too. Equal decisions mean equal audio per
segment, so any difference in the texts comes from segmentation, batching or stitching."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.transcribe.test_api import Calls
from xasr.transcribe.api import Transcriber, join_texts
from xasr.transcribe.vad import VadConfig, slot_energies_db

pytestmark = pytest.mark.slow

SR = 16000
LOCAL_VAD = VadConfig(abs_db=-38.0, rel_db=1000.0, floor_margin_db=-1000.0, max_segment=4.0, detector="energy")


def utterances(corpus: Path, seconds: float):
    files = sorted(corpus.rglob("*.flac"))
    clips, total, k = [], 0.0, 0
    half = np.zeros(SR // 2, np.float32)
    while total < seconds:  # the corpus holds about 2 min: go round again, in reverse order
        order = files if k % 2 == 0 else files[::-1]
        for f in order:
            x, sr = sf.read(f, dtype="float32")
            assert sr == SR
            x = np.concatenate([x, np.zeros(-len(x) % 160, np.float32)])  # whole 10-ms slots
            clips.append(np.concatenate([half, x, half]))
            total += len(clips[-1]) / SR
            if total >= seconds:
                break
        k += 1
    return clips


def test_five_minutes_give_the_per_utterance_transcripts_in_order(tiny_librispeech, tiny_model_dir, monkeypatch):
    clips = utterances(tiny_librispeech, 300.0)
    long = np.concatenate(clips)
    assert len(long) / SR >= 300.0
    asr = Transcriber.from_pretrained(str(tiny_model_dir), threads=2, vad=LOCAL_VAD)

    alone = asr.transcribe([(c, SR) for c in clips], method="cif_greedy")
    calls = Calls(asr.model, monkeypatch)
    whole = asr.transcribe([(long, SR)], method="cif_greedy", max_batch_seconds=30.0)[0]

    assert whole.ok and whole.duration == pytest.approx(len(long) / SR)
    assert whole.text == join_texts(a.text for a in alone)
    expected, offset = [], 0.0
    for c, a in zip(clips, alone):
        assert a.segments, "every utterance has speech"
        expected += [(s.start + offset, s.end + offset, s.text) for s in a.segments]
        offset += len(c) / SR
    got = [(s.start, s.end, s.text) for s in whole.segments]
    assert len(got) == len(expected) == calls.segments
    for (a, b, t), (ea, eb, et) in zip(got, expected):
        assert abs(a - ea) < 1e-3 and abs(b - eb) < 1e-3 and t == et
    assert len(got) > len(clips)  # some utterances were longer than 4 s and were split
    assert len({t for _, _, t in got}) > len(got) // 2  # the texts tell segments apart

    # coverage: segments in order without overlap; every 10-ms slot loud enough to be speech
    # lies inside a segment, except bursts shorter than min_speech (0.1 s)
    inside = np.zeros(len(slot_energies_db(long, SR)), bool)
    for (a, b, _), (c, _, _) in zip(got, got[1:] + [(len(long) / SR, 0, "")]):
        assert a < b <= c + 1e-9
        inside[int(round(a * 100)):int(round(b * 100))] = True
    loud = slot_energies_db(long, SR) >= LOCAL_VAD.abs_db
    assert loud.sum() > 0.5 * len(loud)
    missed = np.diff(np.concatenate([[0], (loud & ~inside).astype(int), [0]]))
    assert np.all(np.flatnonzero(missed == -1) - np.flatnonzero(missed == 1) < 10)
