"""The loop rule: an output is cut where a run of n tokens starts for the second time."""
from __future__ import annotations

from xasr.decoding.loops import cut_repeat, first_repeat, has_repeat


def test_no_repeat_keeps_everything():
    ids = [1, 2, 3, 4, 1, 2, 5, 3, 4]  # pairs repeat, no triple does
    assert first_repeat(ids, 3) is None and not has_repeat(ids, 3)
    assert cut_repeat(ids, 3) == ids
    assert first_repeat(ids, 2) == 4 and cut_repeat(ids, 2) == [1, 2, 3, 4]


def test_a_restarted_sentence_is_cut_where_it_restarts():
    sentence = [10, 11, 12, 13, 14, 15]
    assert cut_repeat(sentence + sentence + sentence[:3], 5) == sentence
    assert cut_repeat(sentence + sentence[:4], 5) == sentence + sentence[:4]  # four tokens again: kept


def test_a_phrase_loop_keeps_one_copy():
    # "the right the right the right ..." as (7, 8) pairs after a prefix
    ids = [1, 2, 7, 8] + [7, 8] * 5
    assert first_repeat(ids, 3) == 4
    assert cut_repeat(ids, 3) == [1, 2, 7, 8]


def test_a_single_token_loop_overlaps_itself():
    ids = [3, 4, 9, 9, 9, 9, 9, 9]
    assert first_repeat(ids, 3) == 3  # (9, 9, 9) at 2 and again at 3
    assert cut_repeat(ids, 3) == [3, 4, 9]


def test_off_and_short_outputs():
    ids = [5, 5, 5, 5]
    assert cut_repeat(ids, 0) == ids and first_repeat(ids, -1) is None
    assert cut_repeat([], 3) == [] and cut_repeat([1, 2], 3) == [1, 2]
