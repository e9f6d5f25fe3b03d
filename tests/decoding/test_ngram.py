"""n-gram LMs: Kneser-Ney training gives proper distributions, ARPA files round-trip, damaged files are named."""
from __future__ import annotations

import math
import random

import pytest

from xasr.decoding.ngram import EOS, UNK, NgramLM, tokenize, train_kneser_ney
from xasr.errors import XasrError

WORDS = "THE CAT SAT ON A MAT DOG RAN".split()


def _sentences(n=300, seed=0):
    g = random.Random(seed)
    return [[g.choice(WORDS) for _ in range(g.randint(1, 7))] for _ in range(n)]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_history_gives_a_distribution(order):
    lm = train_kneser_ney(_sentences(), order)
    for hist in (["<s>"], ["<s>", "THE"], ["CAT", "SAT"], ["NEVER", "SEEN"], ["MAT", "MAT", "MAT"]):
        total = sum(math.exp(lm.logprob(hist, w)) for w in WORDS + [EOS, UNK])
        assert total == pytest.approx(1.0, abs=1e-6)


def test_frequent_continuations_score_higher_and_unknown_words_get_unk():
    sents = [["THE", "CAT", "SAT"]] * 20 + [["THE", "DOG", "RAN"]] * 2
    lm = train_kneser_ney(sents, 3)
    assert lm.logprob(["<s>", "THE"], "CAT") > lm.logprob(["<s>", "THE"], "DOG")
    assert lm.logprob(["THE"], "ZEBRA") == lm.logprob(["THE"], UNK)
    assert "CAT" in lm and "ZEBRA" not in lm
    assert lm.is_prefix("CA") and lm.is_prefix("CAT") and not lm.is_prefix("CX")


def test_arpa_round_trip(tmp_path):
    lm = train_kneser_ney(_sentences(seed=1), 3)
    for name in ("lm.arpa", "lm.arpa.gz"):
        back = NgramLM.read_arpa(lm.write_arpa(tmp_path / name))
        assert back.order == 3
        for sent in _sentences(20, seed=2):
            assert back.sentence_logprob(sent) == pytest.approx(lm.sentence_logprob(sent), abs=1e-4)


def test_perplexity_counts_each_sentence_end_as_a_token():
    lm = train_kneser_ney(_sentences(), 2)
    held = _sentences(30, seed=3)
    n = sum(len(t) + 1 for t in held)
    assert lm.perplexity(held) == pytest.approx(math.exp(-sum(lm.sentence_logprob(t) for t in held) / n))
    # a uniform unigram model over its tokens: the perplexity is their number
    uniform = NgramLM([{(w,): (-math.log10(3), 0.0) for w in ("A", "B", EOS)}])
    assert uniform.perplexity([["A", "B"], ["B"], []]) == pytest.approx(3.0)


def test_truncated_or_foreign_files_are_named(tmp_path):
    path = train_kneser_ney(_sentences(), 2).write_arpa(tmp_path / "lm.arpa")
    lines = path.read_text().splitlines()
    cut = tmp_path / "cut.arpa"
    cut.write_text("\n".join(lines[:len(lines) // 2]) + "\n")
    with pytest.raises(XasrError, match="cut.arpa.*truncated"):
        NgramLM.read_arpa(cut)
    other = tmp_path / "notes.arpa"
    other.write_text("just some text\n")
    with pytest.raises(XasrError, match="notes.arpa"):
        NgramLM.read_arpa(other)
    with pytest.raises(XasrError, match="missing.arpa"):
        NgramLM.read_arpa(tmp_path / "missing.arpa")


def test_tokenize():
    assert tokenize("THE  CAT SAT", "word") == ["THE", "CAT", "SAT"]
    assert tokenize("今天 天气", "char") == ["今", "天", "天", "气"]
    with pytest.raises(ValueError):
        tokenize("x", "phone")
