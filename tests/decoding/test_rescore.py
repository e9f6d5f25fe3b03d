"""CTC prefix beam search (N-best) and LLM rescoring: the search against exhaustive enumeration,
the combined score, and the LLM's target log-probabilities against its training loss."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.decoding.test_joint_ctc import _brute_force, _random_log_probs
from tests.models.tiny_llm import make_tiny_llm
from xasr.decoding.joint_ctc import CtcPrefixScorer
from xasr.decoding.llm_scoring import target_logprobs
from xasr.decoding.rescore import ctc_prefix_search, rescore, unit_pool
from xasr.models.ctc import ctc_greedy_decode
from xasr.models.llm import FrozenLLM, LLMConfig


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_wide_search_finds_the_exact_n_best(seed):
    lp = _random_log_probs(T=6, V=3, seed=seed)
    full, _ = _brute_force(lp)
    exact = sorted(full.items(), key=lambda kv: -kv[1])[:5]
    found = ctc_prefix_search(CtcPrefixScorer(lp), beam=64, nbest=5, pool=np.array([1, 2]))
    assert [y for y, _ in found] == [y for y, _ in exact]
    for (_, s), (_, p) in zip(found, exact):
        assert s == pytest.approx(math.log(p), abs=1e-9)


def test_the_search_is_sorted_bounded_and_agrees_with_a_peaked_head():
    g = np.random.default_rng(7)
    T, V = 60, 12
    best = g.integers(0, V, size=T)  # a confident head: 0.9 on one unit per frame
    probs = np.full((T, V), 0.1 / (V - 1))
    probs[np.arange(T), best] = 0.9
    lp = np.log(probs)
    found = ctc_prefix_search(CtcPrefixScorer(lp), beam=4, nbest=6)
    greedy = ctc_greedy_decode(torch.tensor(lp)[None], torch.tensor([T]))[0]
    assert list(found[0][0]) == greedy
    assert len(found) == 6 and len({y for y, _ in found}) == 6
    scores = [s for _, s in found]
    assert scores == sorted(scores, reverse=True)
    short = ctc_prefix_search(CtcPrefixScorer(lp), beam=4, nbest=3, max_units=5)
    assert all(len(y) <= 5 for y, _ in short)
    with pytest.raises(ValueError, match="at least 1"):
        ctc_prefix_search(CtcPrefixScorer(lp), beam=0)


def test_unit_pool_keeps_units_near_the_top_of_some_frame():
    lp = np.log(np.array([[0.7, 0.2, 0.05, 0.05], [0.6, 0.05, 0.05, 0.3], [0.9, 0.04, 0.03, 0.03]]))
    assert unit_pool(lp, k=2).tolist() == [1, 3]  # the blank never
    assert unit_pool(lp, k=1).tolist() == []
    assert unit_pool(lp, k=10).tolist() == [1, 2, 3]
    # a head that only ever prefers the blank: only the empty transcript is found
    assert ctc_prefix_search(CtcPrefixScorer(lp), beam=1, nbest=3) == [((), pytest.approx(float(lp[:, 0].sum())))]


def test_rescore_weighs_the_two_scores_and_the_length():
    ctc, llm, n = [-1.0, -2.0, -4.0], [-9.0, -3.0, -2.0], [3, 3, 4]
    assert rescore(ctc, llm, n, ctc_weight=1.0) == 0
    assert rescore(ctc, llm, n, ctc_weight=0.0) == 2
    assert rescore(ctc, llm, n, ctc_weight=0.5) == 1  # -5.0, -2.5, -3.0
    assert rescore(ctc, llm, n, ctc_weight=0.5, length_bonus=1.0) == 2  # -2.0, 0.5, 1.0
    with pytest.raises(ValueError, match="ctc_weight"):
        rescore(ctc, llm, n, ctc_weight=-0.1)
    with pytest.raises(ValueError, match="one CTC score"):
        rescore(ctc, llm[:2], n)


@pytest.mark.parametrize("tree, max_nodes", [(True, None), (True, 2), (False, None)])
def test_target_logprobs_are_the_training_loss_of_each_hypothesis(tmp_path, tree, max_nodes):
    """One prompt pass per utterance, its cache shared by the hypotheses, the output layer once per
    distinct prefix (the prefix tree in one pass or 2 nodes at a time, or a row per hypothesis):
    the same numbers as the loss of each (prompt, text) pair alone."""
    torch.manual_seed(0)
    llm = FrozenLLM(LLMConfig(path=str(make_tiny_llm(tmp_path / "llm", hidden=64))))
    g = torch.Generator().manual_seed(2)
    speech = [torch.randn(n, llm.embed_dim, generator=g) for n in (3, 5, 4)]
    texts = [["hello world", "hello word", "hello world again", "hello"], ["the cat"], ["", "a"]]
    got = target_logprobs(llm, speech, texts, tree=tree, max_nodes=max_nodes)
    assert [len(x) for x in got] == [4, 1, 2]
    for s, hyps, lps in zip(speech, texts, got):
        for t, lp in zip(hyps, lps):
            inputs = llm.build_inputs([s.shape[0]], [t])
            emb = llm.embed(inputs["input_ids"], s)
            with torch.no_grad():
                loss, n, _ = llm.loss(emb, inputs["attention_mask"], inputs["labels"])
            assert n == len(llm.target_ids(t)) and lp == pytest.approx(-float(loss), abs=1e-4)
    assert target_logprobs(llm, speech[:2], [[], ["the cat"]], tree=tree) == [[], pytest.approx(got[1], abs=1e-4)]


def test_tune_finds_the_best_grid_point_and_writes_its_table(tmp_path):
    from xasr.decoding.rescore import choose, oracle, tune

    refs = {"a": "the cat sat", "b": "a dog"}
    nbest = {  # (text, units, CTC, LLM): the CTC head prefers the wrong text of "a", the LLM the right one
        "a": [("the cat sad", (1, 2, 3), -1.0, -9.0), ("the cat sat", (1, 2, 4), -2.0, -3.0)],
        "b": [("a dog", (5, 6), -0.5, -2.0), ("a dog dog", (5, 6, 6), -3.0, -2.5)],
        "c_empty": [],
    }
    refs["c_empty"] = ""
    assert choose(nbest, 1.0, 0.0) == {"a": "the cat sad", "b": "a dog", "c_empty": ""}
    assert choose(nbest, 0.5, 0.0)["a"] == "the cat sat"
    assert oracle(nbest, refs, "english_word") == {"a": "the cat sat", "b": "a dog", "c_empty": ""}
    t = tune(nbest, refs, "english_word", weights=[0.5, 1.0], bonuses=[0.0, 5.0])
    assert t.unit == "WER" and t.ctc_alone == pytest.approx(20.0) and t.oracle == 0.0
    assert t.table[(0.5, 0.0)] == 0.0 and t.table[(1.0, 5.0)] == pytest.approx(40.0)  # the bonus adds "dog"
    assert t.best == (0.5, 0.0)
    files = t.write(tmp_path, "dev", "dev")
    assert files["png"].stat().st_size > 0
    assert files["tsv"].read_text().splitlines()[:2] == ["ctc_weight\tlength_bonus\t%WER", "0.5\t0\t0.00"]
    with pytest.raises(ValueError, match="CTC weights"):
        tune(nbest, refs, "english_word", weights=[1.5])


# ---------------------------------------------------------------------- n-gram LM fusion
PIECES = ["<blk>", "\u2581THE", "\u2581CAT", "\u2581C", "AT", "X", "\u2581SAT"]


def _lm():
    from xasr.decoding.ngram import train_kneser_ney

    return train_kneser_ney([["THE", "CAT", "SAT"]] * 5 + [["THE", "CAT"]] * 2, 3)


def _ambiguous_log_probs():
    """THE, then a C spelt either ▁C X (slightly likelier for CTC) or ▁C AT, then SAT."""
    rows = [{1: 0.9}, {3: 0.9}, {5: 0.5, 4: 0.45}, {6: 0.9}]
    probs = np.full((len(rows), len(PIECES)), 1e-3)
    for t, row in enumerate(rows):
        for u, p in row.items():
            probs[t, u] = p
        probs[t, 0] = 1.0 - probs[t, 1:].sum()
    return np.log(probs)


def test_lm_fusion_scores_finished_words_and_the_end():
    from xasr.decoding.rescore import LmFusion

    lm = _lm()
    fusion = LmFusion(lm, PIECES, "word", weight=0.6, token_bonus=1.5, oov_penalty=-10.0)
    units = (1, 3, 4, 6)  # ▁THE ▁C AT ▁SAT = THE CAT SAT
    assert fusion.final_score(units) == pytest.approx(0.6 * lm.sentence_logprob(["THE", "CAT", "SAT"]) + 1.5 * 3)
    # running: THE and CAT finished, SAT started (a vocabulary prefix, so no penalty yet)
    expected = 0.6 * (lm.logprob(["<s>"], "THE") + lm.logprob(["<s>", "THE"], "CAT")) + 1.5 * 3
    assert fusion.prefix_score(units) == pytest.approx(expected)
    # a word no vocabulary word starts with pays the penalty at once
    assert fusion.prefix_score((1, 3, 5)) == pytest.approx(0.6 * (lm.logprob(["<s>"], "THE") - 10.0) + 1.5 * 2)


def test_the_lm_turns_a_misspelling_into_a_word():
    from xasr.decoding.rescore import LmFusion

    lp = _ambiguous_log_probs()
    plain = ctc_prefix_search(CtcPrefixScorer(lp), beam=4, nbest=4)
    assert plain[0][0] == (1, 3, 5, 6)  # THE CX SAT
    off = ctc_prefix_search(CtcPrefixScorer(lp), beam=4, nbest=4, lm=LmFusion(_lm(), PIECES, weight=0.0, token_bonus=0.0))
    assert [y for y, _ in off] == [y for y, _ in plain]
    fused = ctc_prefix_search(CtcPrefixScorer(lp), beam=4, nbest=4, lm=LmFusion(_lm(), PIECES, weight=0.5))
    assert fused[0][0] == (1, 3, 4, 6)  # THE CAT SAT


def test_character_lm_fusion_scores_every_character():
    from xasr.decoding.ngram import train_kneser_ney
    from xasr.decoding.rescore import LmFusion

    lm = train_kneser_ney([list("今天好"), list("天气好")], 2)
    pieces = ["<blk>", "\u2581今", "天", "好", "气"]
    fusion = LmFusion(lm, pieces, "char", weight=1.0, token_bonus=0.5)
    assert fusion.prefix_score((1, 2)) == pytest.approx(lm.logprob(["<s>"], "今") + lm.logprob(["今"], "天") + 1.0)
    assert fusion.final_score((1, 2, 3)) == pytest.approx(lm.sentence_logprob(list("今天好")) + 1.5)
