import logging
import math

import numpy as np
import pytest

from xasr.scoring.wer import ScoringError, format_alignment, kaldi_line, score, write_results


def test_one_substitution_one_deletion():
    r = score({"u1": "A B C D"}, {"u1": "A X C"}, normalizer="none")
    (u,) = r.utts
    assert (u.num_ref, u.num_sub, u.num_del, u.num_ins) == (4, 1, 1, 0)
    assert u.alignment == (("A", "A"), ("B", "X"), ("C", "C"), ("D", None))
    assert r.error_rate == 0.5
    assert r.unit == "WER" and r.normalizer == "none"
    assert kaldi_line(r) == "%WER 50.00 [ 2 / 4, 0 ins, 1 del, 1 sub ]"
    assert format_alignment(u.alignment) == "A (B->X) C (D->*)"


def test_kaldi_line_rounds_to_two_decimals():
    r = score({"u": "A B C"}, {"u": "A B"}, normalizer="none")
    assert kaldi_line(r) == "%WER 33.33 [ 1 / 3, 0 ins, 1 del, 0 sub ]"


REFS = {"u2": "b e", "u1": "A, b c d.", "u3": "G H!"}
HYPS = {"u1": "a x c", "u2": "X E F", "u3": "g h"}


def test_totals_and_confusions():
    r = score(REFS, HYPS, normalizer="english_word")
    assert r.ids == ["u1", "u2", "u3"]  # sorted by id
    assert (r.num_ref, r.num_sub, r.num_del, r.num_ins) == (8, 2, 1, 1)
    assert r.num_errors == 4 and r.error_rate == 0.5 and r.num_sentence_errors == 2
    assert kaldi_line(r) == "%WER 50.00 [ 4 / 8, 1 ins, 1 del, 2 sub ]"
    assert r.utts[1].alignment == (("B", "X"), ("E", "E"), (None, "F"))
    assert r.top_substitutions() == [(("B", "X"), 2)]
    assert r.top_deletions() == [("D", 1)]
    assert r.top_insertions() == [("F", 1)]
    assert r.rate("sub") == 0.25 and r.rate("del") == 0.125 and r.rate("ins") == 0.125
    np.testing.assert_array_equal(r.per_utt_errors(), [2, 2, 0])
    np.testing.assert_array_equal(r.per_utt_ref_lens(), [4, 2, 2])


def test_normalizer_decides_what_counts():
    refs, hyps = {"u": "Hello, world!"}, {"u": "hello world"}
    assert score(refs, hyps, "english_word").num_errors == 0
    assert kaldi_line(score(refs, hyps, "none")) == "%WER 100.00 [ 2 / 2, 0 ins, 0 del, 2 sub ]"


def test_top_confusions_sorted_by_count_then_token():
    r = score({"a": "P Q R S", "b": "P Q", "c": "R"},
              {"a": "P1 Q1 R1 S1", "b": "P1 Q1", "c": "R2"}, "none")
    assert r.top_substitutions(3) == [(("P", "P1"), 2), (("Q", "Q1"), 2), (("R", "R1"), 1)]
    assert len(r.top_substitutions(None)) == 5


def test_chinese_characters_full_width_punctuation_and_digits():
    refs = {"a": "今天天气很好。", "b": "２０２０年"}
    hyps = {"a": "今天天汽很好！", "b": "2020年"}
    r = score(refs, hyps, normalizer="chinese_char")
    assert r.unit == "CER"
    assert r.utts[0].alignment[3] == ("气", "汽")
    assert r.utts[1].num_errors == 0 and r.utts[1].ref == ("2020", "年")
    assert kaldi_line(r) == "%CER 12.50 [ 1 / 8, 0 ins, 0 del, 1 sub ]"


def test_missing_hypothesis_counts_as_deletions_and_is_reported(caplog):
    with caplog.at_level(logging.WARNING, logger="xasr.scoring.wer"):
        r = score({"u1": "A B", "u2": "C D E"}, {"u1": "A B"}, normalizer="none")
    assert r.missing_ids == ("u2",)
    assert r.utts[1].missing and r.utts[1].alignment == (("C", None), ("D", None), ("E", None))
    assert kaldi_line(r) == "%WER 60.00 [ 3 / 5, 0 ins, 3 del, 0 sub ]"
    assert "1 of 2 reference(s) have no hypothesis" in caplog.text and "u2" in caplog.text


def test_extra_hypotheses_are_an_error():
    with pytest.raises(ScoringError, match=r"2 hypothesis id\(s\) have no reference: u8, u9"):
        score({"u1": "A"}, {"u1": "A", "u9": "B", "u8": "C"}, normalizer="none")


def test_empty_texts():
    r = score({"a": "", "b": "", "c": "X Y"}, {"a": "", "b": "P Q", "c": ""}, normalizer="none")
    assert [u.num_errors for u in r.utts] == [0, 2, 2]
    assert r.utts[1].alignment == ((None, "P"), (None, "Q"))
    assert kaldi_line(r) == "%WER 200.00 [ 4 / 2, 2 ins, 2 del, 0 sub ]"
    assert score({"a": ""}, {"a": ""}, "none").error_rate == 0.0
    assert math.isinf(score({"a": "。"}, {"a": "好"}, "chinese_char").error_rate)
    assert score({}, {}, "none").error_rate == 0.0


def test_write_results(tmp_path):
    r = score(REFS, HYPS, normalizer="english_word")
    paths = write_results(r, tmp_path / "decode", "test")
    assert {k: p.name for k, p in paths.items()} == \
        {"recogs": "recogs-test.txt", "errs": "errs-test.txt", "wer": "wer-test.txt"}
    assert paths["recogs"].read_text(encoding="utf-8") == (
        "u1:\tref=['A', 'B', 'C', 'D']\n"
        "u1:\thyp=['A', 'X', 'C']\n"
        "u2:\tref=['B', 'E']\n"
        "u2:\thyp=['X', 'E', 'F']\n"
        "u3:\tref=['G', 'H']\n"
        "u3:\thyp=['G', 'H']\n"
    )
    errs = paths["errs"].read_text(encoding="utf-8")
    lines = errs.splitlines()
    assert lines[0] == "%WER 50.00 [ 4 / 8, 1 ins, 1 del, 2 sub ]"
    assert lines[1] == "normalizer: english_word"
    assert lines[2] == "Errors: 1 insertions, 1 deletions, 2 substitutions, over 8 reference words (5 correct)"
    details = lines[lines.index("PER-UTT DETAILS: utterances with errors, correct tokens or (REF->HYP)") + 1:]
    assert details[:3] == ["u1:\tA (B->X) C (D->*)", "u2:\t(B->X) E (*->F)", ""]  # u3 is correct
    assert "SUBSTITUTIONS: count ref -> hyp\n2\tB -> X\n" in errs
    assert "DELETIONS: count ref\n1\tD\n" in errs
    assert "INSERTIONS: count hyp\n1\tF\n\nPER-WORD STATS" in errs
    # per token: correct, errors it is in, count in refs, count in hyps; B (2 subs) and X first
    stats = errs.split("PER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp\n")[1].splitlines()
    assert stats[:2] == ["B   0 2 2 0", "X   0 2 0 2"]
    assert "D   0 1 1 0" in stats and "F   0 1 0 1" in stats
    assert paths["wer"].read_text(encoding="utf-8") == (
        "%WER 50.00 [ 4 / 8, 1 ins, 1 del, 2 sub ]\n"
        "%SER 66.67 [ 2 / 3 ]\n"
        "Scored 3 sentences, 0 not present in hyp.\n"
        "normalizer: english_word\n"
    )


def test_write_results_with_method_chinese_and_missing(tmp_path):
    r = score({"a": "今天天气很好。", "b": "你好"}, {"a": "今天天汽很好！"}, normalizer="chinese_char")
    paths = write_results(r, tmp_path, "dev", method="beam-4")
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        ["errs-dev-beam-4.txt", "recogs-dev-beam-4.txt", "wer-dev-beam-4.txt"]
    wer = paths["wer"].read_text(encoding="utf-8").splitlines()
    assert wer[0] == "%CER 37.50 [ 3 / 8, 0 ins, 2 del, 1 sub ]"
    assert wer[2] == "Scored 2 sentences, 1 not present in hyp."
    assert wer[3] == "normalizer: chinese_char"
    errs = paths["errs"].read_text(encoding="utf-8")
    assert "over 8 reference characters (5 correct)" in errs
    assert "Missing hypotheses (scored as all deletions): b\n" in errs
    assert "a:\t今 天 天 (气->汽) 很 好\n" in errs and "b:\t(你->*) (好->*)\n" in errs
    assert "a:\thyp=['今', '天', '天', '汽', '很', '好']\n" in paths["recogs"].read_text(encoding="utf-8")
    assert "b:\thyp=[]\n" in paths["recogs"].read_text(encoding="utf-8")
