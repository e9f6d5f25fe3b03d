"""CTC prefix beam search (N-best lists) and their rescoring by the LLM.

In: one utterance's CTC log-probabilities (T, V) from the stage-1 head; for the rescoring, the
N-best texts with their CTC log-probabilities and, per text, the LLM's log-probability of
writing it after the utterance's prompt (``FrozenLLM.target_logprobs``).
Out: ``ctc_prefix_search``: up to ``nbest`` unit sequences with their CTC log-probabilities,
best first; ``rescore``: the index of the best hypothesis under the combined score.

The search (label-synchronous, as the CTC part of Watanabe et al. 2017's hybrid decoding with
the CTC weight at 1): hypotheses grow one unit per step; each step every running hypothesis
ends (scored with its full CTC probability, :meth:`CtcPrefixScorer.full_score`) and extends by
its ``beam`` best next units by *prefix* probability; the ``beam`` best extensions run on. A
prefix probability bounds the full probability of every continuation, so an extension whose
prefix probability is below the ``nbest``-th best ended hypothesis is dropped, and the search
stops when none is left (or at ``max_units``). Units are tried from a pool: those among the
``beam`` likeliest of some frame (a unit that is never near the top of any frame has a
negligible prefix probability), which keeps each step a (T, pool) computation.

The rescoring (second-pass rescoring with the LLM as a speech-conditioned language model):

    (1 - w) * log P_LLM(text | prompt, speech) + w * log P_CTC(units) + length_bonus * |units|

over the N-best, w = ``ctc_weight``. With w = 1 it returns the CTC search's best; the LLM moves
the choice only where it is sure enough to outweigh the CTC head's preference.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from xasr.decoding.joint_ctc import CtcPrefixScorer, Units


def unit_pool(log_probs: np.ndarray, k: int, blank: int = 0) -> np.ndarray:
    """The non-blank units among the ``k`` likeliest of at least one frame, sorted: (C,)."""
    k = min(k, log_probs.shape[1])
    top = np.argpartition(-log_probs, k - 1, axis=1)[:, :k]
    pool = np.unique(top)
    return pool[pool != blank]


def ctc_prefix_search(scorer: CtcPrefixScorer, beam: int = 8, nbest: int = 8, max_units: Optional[int] = None,
                      pool: Optional[np.ndarray] = None) -> List[Tuple[Units, float]]:
    """Up to ``nbest`` (units, CTC log-probability) of the utterance, best first.

    beam: running hypotheses kept, and next units tried per hypothesis; max_units: longest
    hypothesis (default: the number of frames); pool: the units tried (default
    :func:`unit_pool` with ``k = beam``).
    """
    if beam < 1 or nbest < 1:
        raise ValueError(f"beam and nbest must be at least 1, not {beam} and {nbest}")
    if pool is None:
        pool = unit_pool(scorer.lp, beam, scorer.blank)
    pool = np.asarray(pool)
    limit = scorer.T if max_units is None else min(int(max_units), scorer.T)
    ended = {}
    running: List[Units] = [()]
    for n in range(limit + 1):
        for y in running:
            ended[y] = scorer.full_score(y)
        if n == limit or len(pool) == 0:
            break
        scores = sorted(ended.values(), reverse=True)
        floor = scores[nbest - 1] if len(scores) >= nbest else -np.inf
        k = min(beam, len(pool))
        cands = []
        psi = scorer.extension_scores(running, pool)  # (H, C)
        for y, row in zip(running, psi):
            for j in np.argpartition(-row, k - 1)[:k]:
                if row[j] > floor:
                    cands.append((float(row[j]), y + (int(pool[j]),)))
        if not cands:
            break
        cands.sort(key=lambda c: -c[0])
        running = [y for _, y in cands[:beam]]
        scorer.ensure(running)
    return sorted(ended.items(), key=lambda kv: -kv[1])[:nbest]


def rescore(ctc_scores: Sequence[float], llm_scores: Sequence[float], lengths: Sequence[int],
            ctc_weight: float = 0.5, length_bonus: float = 0.0) -> int:
    """Index of the hypothesis with the best combined score (the first of equals)."""
    if not 0.0 <= ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight must be in [0, 1], not {ctc_weight}")
    if not (len(ctc_scores) == len(llm_scores) == len(lengths)) or not ctc_scores:
        raise ValueError("rescore needs one CTC score, LLM score and length per hypothesis, and a hypothesis")
    combined = [(1 - ctc_weight) * l + ctc_weight * c + length_bonus * n
                for c, l, n in zip(ctc_scores, llm_scores, lengths)]
    return int(np.argmax(combined))
