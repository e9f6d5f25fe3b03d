"""CTC forced alignment and word timestamps: exact spans on constructed posteriors, the same path
as torchaudio's aligner on random ones, words split at spaces and CJK characters."""
from __future__ import annotations

import numpy as np
import pytest

from tests.transcribe.conftest import tiny_units  # noqa: F401 (fixture)
from xasr.decoding.align import ctc_forced_align, split_words, word_timestamps


def peaky(frames, vocab: int, peak: float = 0.9) -> np.ndarray:
    """(T, V) log-probs whose best unit per frame is ``frames[t]`` (0: blank)."""
    p = np.full((len(frames), vocab), (1 - peak) / (vocab - 1))
    p[np.arange(len(frames)), frames] = peak
    return np.log(p)


def test_spans_follow_the_best_path_with_repeats_and_blanks():
    #          0  1  2  3  4  5  6  7  8  9
    frames = [0, 3, 3, 0, 0, 3, 4, 4, 0, 5]
    assert ctc_forced_align(peaky(frames, 6), [3, 3, 4, 5]) == [(1, 3), (5, 6), (6, 8), (9, 10)]
    assert ctc_forced_align(peaky([0, 3, 0], 6), []) == []
    assert ctc_forced_align(peaky([3, 3], 6), [3, 3]) is None  # a repeat needs a blank between: 3 frames


def test_the_path_equals_torchaudios_aligner_on_random_posteriors():
    import warnings

    import torch
    import torchaudio.functional as F

    rng = np.random.default_rng(0)
    for trial in range(5):
        T, V = 60, 8
        lp = torch.randn(T, V, generator=torch.Generator().manual_seed(trial)).mul(3).log_softmax(-1)
        targets = rng.integers(1, V, size=12).tolist()
        ours = ctc_forced_align(lp.numpy().astype(np.float64), targets)
        with warnings.catch_warnings():  # torchaudio marks its aligner deprecated
            warnings.simplefilter("ignore")
            path, _ = F.forced_align(lp[None], torch.tensor([targets]), blank=0)
        theirs = [(s.start, s.end) for s in F.merge_tokens(path[0], torch.zeros(T))]
        assert ours == theirs, trial


def test_words_of_english_and_chinese_text(tiny_units):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tiny_units))
    words = split_words("the cat sat", sp)
    assert [w for w, _, _ in words] == ["the", "cat", "sat"]
    assert [len(ids) for _, ids, _ in words] == [3, 3, 3]  # char units: a unit per letter
    zh = split_words("猫 sat好", sp)  # CJK the units cannot write: words without units
    assert [(w, len(ids)) for w, ids, _ in zh] == [("猫", 0), ("sat", 3), ("好", 0)]


def test_word_times_from_the_alignment(tiny_units):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tiny_units))
    ids = {c: sp.piece_to_id(c) for c in "thecat"}
    # frames 0.04 s each: "the" on frames 2-4, a pause, "cat" on frames 10-13
    frames = [0, 0, ids["t"], ids["h"], ids["e"], 0, 0, 0, 0, 0, ids["c"], ids["a"], ids["a"], ids["t"], 0]
    lp = peaky(frames, sp.get_piece_size())
    got = word_timestamps(lp, "the cat", sp, frame_seconds=0.04, offset=1.0)
    assert [w["word"] for w in got] == ["the", "cat"]
    assert [(w["start"], w["end"]) for w in got] == [(1.08, 1.2), (1.4, 1.56)]
    assert all(w["probability"] == pytest.approx(0.9) for w in got)
    assert word_timestamps(lp[:2], "the cat", sp, 0.04) == []  # too few frames for the text
