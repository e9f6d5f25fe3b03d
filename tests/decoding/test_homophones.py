"""Homophone classes in the CTC prefix search: the class probability is kept, the split among
members follows the scale, two members in a row need a blank, and with scale 0 the LM chooses
the homophone the head ranked low."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from xasr.decoding.homophones import class_log_probs, espeak_readings, expand_pool, unit_classes
from xasr.decoding.joint_ctc import CtcPrefixScorer
from xasr.decoding.ngram import NgramLM
from xasr.decoding.rescore import LmFusion, ctc_prefix_search

# units: 0 blank, 1 "是", 2 "事" (homophones), 3 "天"
PIECES = ["<blk>", "是", "事", "天"]
READ = {"是": "s.'i.51", "事": "s.'i.51", "天": "th'iE55n"}


def frames(rows):
    p = np.array(rows, dtype=np.float64)
    return np.log(p / p.sum(axis=1, keepdims=True))


def test_classes_group_units_that_read_alike_and_nothing_else():
    cls = unit_classes(PIECES + ["\u2581a", "天天"], READ)
    assert cls[1] == cls[2]
    assert len({cls[0], cls[1], cls[3], cls[4], cls[5]}) == 5


def test_class_probability_is_kept_and_the_split_follows_the_scale():
    lp = frames([[0.1, 0.6, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1]])
    cls = unit_classes(PIECES, READ)
    assert np.array_equal(class_log_probs(lp, cls, 1.0), lp)
    flat = class_log_probs(lp, cls, 0.0)
    np.testing.assert_allclose(np.exp(flat[:, 1]), np.exp(lp[:, 1]) + np.exp(lp[:, 2]))
    np.testing.assert_allclose(flat[:, 1], flat[:, 2])
    np.testing.assert_allclose(flat[:, [0, 3]], lp[:, [0, 3]])
    half = class_log_probs(lp, cls, 0.5)
    assert flat[0, 2] > half[0, 2] > lp[0, 2]  # the minority member gains as the scale falls
    assert sorted(expand_pool(np.array([1]), cls).tolist()) == [1, 2]


def _lm(prefer: str) -> NgramLM:
    """A unigram LM over the three characters that strongly prefers ``prefer``."""
    probs = {(c,): (np.log10(0.8 if c == prefer else 0.05), 0.0) for c in ["是", "事", "天"]}
    probs[("</s>",)] = (np.log10(0.1), 0.0)
    probs[("<s>",)] = (-99.0, 0.0)
    return NgramLM([probs])


def test_with_scale_zero_the_lm_picks_the_homophone_the_head_ranked_low():
    lp = frames([[0.05, 0.9, 0.04, 0.01], [0.9, 0.05, 0.04, 0.01]])  # "是" heard, "事" a distant second
    cls = unit_classes(PIECES, READ)
    lm = LmFusion(_lm("事"), PIECES, "char", weight=0.3, token_bonus=0.0)
    plain = ctc_prefix_search(CtcPrefixScorer(lp), beam=4, nbest=4, lm=lm)
    assert plain[0][0] == (1,)  # the head's preference outweighs a light LM
    lm = LmFusion(_lm("事"), PIECES, "char", weight=0.3, token_bonus=0.0)
    flat = ctc_prefix_search(CtcPrefixScorer(class_log_probs(lp, cls, 0.0), classes=cls), beam=4, nbest=4, lm=lm)
    assert flat[0][0] == (2,)  # same sound, the LM decides
    assert (1,) in [y for y, _ in flat]


def test_two_members_of_a_class_in_a_row_need_a_blank_between_them():
    lp = frames([[0.01, 0.5, 0.48, 0.01], [0.01, 0.5, 0.48, 0.01]])  # one syllable over two frames
    cls = unit_classes(PIECES, READ)
    plain = CtcPrefixScorer(lp)
    grouped = CtcPrefixScorer(lp, classes=cls)
    assert np.isfinite(plain.full_score((1, 2)))  # as characters, 是事 may come from one spike
    assert grouped.full_score((1, 2)) == -np.inf  # as one syllable class, it may not
    assert grouped.full_score((1, 3)) == pytest.approx(plain.full_score((1, 3)))
    nxt = grouped.next_unit_scores((1,))
    assert nxt[2] == pytest.approx(grouped.prefix_score((1, 2))) and nxt[2] == -np.inf


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_espeak_readings_make_mandarin_homophones_one_class():
    read = espeak_readings(["是", "事", "天", "市"])
    assert read["是"] == read["事"] == read["市"] != read["天"]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_symbols_have_no_reading_and_do_not_upset_the_one_call(monkeypatch):
    import subprocess

    calls = []
    real = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    read = espeak_readings(["<", ">", "/", "是", "天"])
    assert set(read) == {"是", "天"} and len(calls) == 1
