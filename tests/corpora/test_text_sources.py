import re

import pytest

from xasr.corpora import text_sources as ts
from xasr.corpora.text_sources import (
    chinese_sentences, english_sentences, is_simplified_chinese, normalize_english, number_to_words,
    ordinal_to_words, split_chinese,
)


@pytest.mark.parametrize("n, words", [
    (0, "ZERO"), (7, "SEVEN"), (13, "THIRTEEN"), (20, "TWENTY"), (21, "TWENTY ONE"),
    (100, "ONE HUNDRED"), (101, "ONE HUNDRED ONE"), (1999, "ONE THOUSAND NINE HUNDRED NINETY NINE"),
    (2024, "TWO THOUSAND TWENTY FOUR"), (1_000_000, "ONE MILLION"),
    (1_234_567, "ONE MILLION TWO HUNDRED THIRTY FOUR THOUSAND FIVE HUNDRED SIXTY SEVEN"),
])
def test_number_to_words(n, words):
    assert number_to_words(n) == words


@pytest.mark.parametrize("n, words", [
    (1, "FIRST"), (2, "SECOND"), (3, "THIRD"), (5, "FIFTH"), (12, "TWELFTH"), (20, "TWENTIETH"),
    (21, "TWENTY FIRST"), (100, "ONE HUNDREDTH"),
])
def test_ordinal_to_words(n, words):
    assert ordinal_to_words(n) == words


@pytest.mark.parametrize("text, norm", [
    ("Don't stop—it's 3 o'clock, Mr. Smith!", "DON'T STOP IT'S THREE O'CLOCK MR SMITH"),
    ("He paid 1,000 men.", "HE PAID ONE THOUSAND MEN"),
    ("The 21st century; well-known.", "THE TWENTY FIRST CENTURY WELL KNOWN"),
    ("“Quoted,” she said ‘softly’.", "QUOTED SHE SAID SOFTLY"),
    ("Salt & pepper", "SALT AND PEPPER"),
])
def test_normalize_english(text, norm):
    assert normalize_english(text) == norm


@pytest.mark.parametrize("text", ["It is 3.5 km away", "a café", "mp3 files", "50% off", "...", "user@example"])
def test_normalize_english_rejects(text):
    assert normalize_english(text) is None


def test_simplified_chinese():
    assert is_simplified_chinese("江南好风景")
    assert not is_simplified_chinese("國語")  # traditional forms are not in GB2312
    assert not is_simplified_chinese("江南1号")
    assert not is_simplified_chinese("abc")
    assert not is_simplified_chinese("")


def test_split_chinese_packs_clauses_and_drops_punctuation():
    text = "兰叶春葳蕤，桂华秋皎洁。欣欣此生意，自尔为佳节！“好”字不好。"
    assert split_chinese(text, 6, 12) == ["兰叶春葳蕤桂华秋皎洁", "欣欣此生意自尔为佳节"]
    # a sentence longer than max_chars is cut at its clause boundaries
    assert split_chinese(text, 5, 6) == ["兰叶春葳蕤", "桂华秋皎洁", "欣欣此生意", "自尔为佳节"]
    assert split_chinese("学习Python很有趣。", 2, 20) == []


def test_chinese_sentences_from_fortunes_zh():
    sents = chinese_sentences(6, 20)
    assert len(sents) > 5000
    for s in sents[:: max(1, len(sents) // 500)]:
        assert is_simplified_chinese(s.transcript) and 6 <= len(s.transcript) <= 20
        assert s.spoken == s.transcript
    assert len({s.transcript for s in sents}) == len(sents)


def test_chinese_vocabulary_limit_keeps_sentences_of_common_characters():
    from collections import Counter

    full = chinese_sentences(6, 20)
    limited = chinese_sentences(6, 20, max_vocab=300)
    chars = {ch for s in limited for ch in s.transcript}
    assert 0 < len(limited) < len(full) and len(chars) <= 300
    counts = Counter(ch for s in full for ch in s.transcript)
    rarest_kept = min(counts[ch] for ch in chars)
    assert rarest_kept >= sorted(counts.values(), reverse=True)[299]


def test_english_sentences_are_librispeech_style():
    sents = english_sentences(4, 22)
    assert len(sents) > 20000
    assert {s.source for s in sents} == {"sword-text-web", "wordnet-base", "fortunes"}
    for s in sents[:: max(1, len(sents) // 1000)]:
        assert re.fullmatch(r"[A-Z']+( [A-Z']+)*", s.transcript), s.transcript
        assert 4 <= len(s.transcript.split()) <= 22
        assert s.spoken == s.transcript.lower()


def test_missing_text_package_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setattr(ts, "FORTUNE_DIR", tmp_path)
    with pytest.raises(ts.TextSourceError, match="apt-get install -y fortunes-zh"):
        chinese_sentences()
