"""CTC prefix beam search (N-best lists) and their rescoring by the LLM.

In: one utterance's CTC log-probabilities (T, V) from the stage-1 head; for the rescoring, the
N-best texts with their CTC log-probabilities and, per text, the LLM's log-probability of
writing it after the utterance's prompt (:func:`xasr.decoding.llm_scoring.target_logprobs`).
Out: ``ctc_prefix_search``: up to ``nbest`` unit sequences with their CTC log-probabilities,
best first; ``rescore``: the index of the best hypothesis under the combined score; ``tune``:
on a set with references, the error rate at each point of a grid of the two weights
(:class:`Tuning`, with the best point, a table and a plot).

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

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from xasr.decoding.homophones import expand_pool
from xasr.decoding.joint_ctc import CtcPrefixScorer, Units
from xasr.decoding.ngram import BOS, EOS, NgramLM


def unit_pool(log_probs: np.ndarray, k: int, blank: int = 0) -> np.ndarray:
    """The non-blank units among the ``k`` likeliest of at least one frame, sorted: (C,)."""
    k = min(k, log_probs.shape[1])
    top = np.argpartition(-log_probs, k - 1, axis=1)[:, :k]
    pool = np.unique(top)
    return pool[pool != blank]


class LmFusion:
    """An n-gram LM's score of a hypothesis (a unit sequence) for the CTC prefix search: shallow fusion.

    ``pieces``: the text of each unit id (sentencepiece, "▁" starting a word). ``tokens``:
    ``word`` (the LM scores a word when the next one starts, and the last one at the end) or
    ``char`` (every character as it is written). A hypothesis gains ``weight`` x (the LM's
    log-probability of its finished tokens) + ``token_bonus`` x (its tokens, the unfinished word
    included); a word outside the LM's vocabulary, and an unfinished word that no vocabulary word
    starts with, count ``oov_penalty`` instead of a log-probability. States are cached per unit
    sequence (one object per utterance).
    """

    def __init__(self, lm: NgramLM, pieces: Sequence[str], tokens: str = "word", weight: float = 0.5,
                 token_bonus: float = 0.0, oov_penalty: float = -10.0) -> None:
        if tokens not in ("word", "char"):
            raise ValueError(f"LM tokens must be word or char, not {tokens!r}")
        self.lm, self.pieces, self.tokens = lm, pieces, tokens
        self.weight, self.token_bonus, self.oov_penalty = weight, token_bonus, oov_penalty
        # units -> (LM history, log-probability of finished tokens, finished tokens, unfinished word)
        self._states: Dict[Units, Tuple[Tuple[str, ...], float, int, str]] = {(): (lm.state([BOS]), 0.0, 0, "")}

    def _token(self, hist: Tuple[str, ...], tok: str) -> float:
        return self.lm.logprob(hist, tok) if tok in self.lm else self.oov_penalty

    def _state(self, units: Units) -> Tuple[Tuple[str, ...], float, int, str]:
        st = self._states.get(units)
        if st is not None:
            return st
        hist, score, n, partial = self._state(units[:-1])
        piece = self.pieces[units[-1]]
        if self.tokens == "char":
            for c in piece.replace("\u2581", "").strip():
                score += self._token(hist, c)
                hist, n = self.lm.state(hist + (c,)), n + 1
        elif piece.startswith("\u2581"):
            if partial:
                score += self._token(hist, partial)
                hist, n = self.lm.state(hist + (partial,)), n + 1
            partial = piece[1:]
        else:
            partial += piece
        st = (hist, score, n, partial)
        self._states[units] = st
        return st

    def prefix_score(self, units: Units) -> float:
        """The LM's part of a running hypothesis' score."""
        _, score, n, partial = self._state(units)
        if partial:
            n += 1
            if not self.lm.is_prefix(partial):
                score += self.oov_penalty
        return self.weight * score + self.token_bonus * n

    def final_score(self, units: Units) -> float:
        """The LM's part of an ended hypothesis' score (its last word and the end of the sentence)."""
        hist, score, n, partial = self._state(units)
        if partial:
            score += self._token(hist, partial)
            hist, n = self.lm.state(hist + (partial,)), n + 1
        return self.weight * (score + self.lm.logprob(hist, EOS)) + self.token_bonus * n


def ctc_prefix_search(scorer: CtcPrefixScorer, beam: int = 8, nbest: int = 8, max_units: Optional[int] = None,
                      pool: Optional[np.ndarray] = None, lm: Optional[LmFusion] = None) -> List[Tuple[Units, float]]:
    """Up to ``nbest`` (units, CTC log-probability) of the utterance, best first.

    beam: running hypotheses kept, and next units tried per hypothesis; max_units: longest
    hypothesis (default: the number of frames); pool: the units tried (default
    :func:`unit_pool` with ``k = beam``); lm: an n-gram LM fused into the search, whose part
    (:meth:`LmFusion.prefix_score`, :meth:`LmFusion.final_score`) is then added to every score
    ranked and returned (each extension is chosen from twice as many units by CTC alone).
    With homophone classes on the scorer (``scorer.classes``), the pool holds every member of
    the classes it touches and a hypothesis extends by every member of its likeliest classes
    (twice ``beam`` of them with an LM), so the LM sees all homophones.
    """
    if beam < 1 or nbest < 1:
        raise ValueError(f"beam and nbest must be at least 1, not {beam} and {nbest}")
    classes = scorer.classes
    if pool is None:
        pool = expand_pool(unit_pool(scorer.lp, beam, scorer.blank), classes, scorer.blank)
    pool = np.asarray(pool)
    limit = scorer.T if max_units is None else min(int(max_units), scorer.T)
    ended = {}
    running: List[Units] = [()]
    for n in range(limit + 1):
        for y in running:
            ended[y] = scorer.full_score(y) + (lm.final_score(y) if lm is not None else 0.0)
        if n == limit or len(pool) == 0:
            break
        scores = sorted(ended.values(), reverse=True)
        floor = scores[nbest - 1] if len(scores) >= nbest else -np.inf
        k = min(beam if lm is None else 2 * beam, len(pool))
        cands = []
        psi = scorer.extension_scores(running, pool)  # (H, C)
        for y, row in zip(running, psi):
            tried = _top_classes(row, classes[pool], k) if classes is not None else np.argpartition(-row, k - 1)[:k]
            for j in tried:
                ext = y + (int(pool[j]),)
                score = float(row[j]) + (lm.prefix_score(ext) if lm is not None else 0.0)
                if score > floor:
                    cands.append((score, ext))
        if not cands:
            break
        cands.sort(key=lambda c: -c[0])
        running = [y for _, y in cands[:beam]]
        scorer.ensure(running)
    return sorted(ended.items(), key=lambda kv: -kv[1])[:nbest]


def _top_classes(row: np.ndarray, pool_classes: np.ndarray, k: int) -> np.ndarray:
    """Indices of the pool units whose class is among the ``k`` classes of the best scores."""
    order = np.argsort(-row, kind="stable")
    _, first = np.unique(pool_classes[order], return_index=True)
    best = pool_classes[order][np.sort(first)[:k]]
    return np.nonzero(np.isin(pool_classes, best))[0]


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


# ---------------------------------------------------------------------- choosing the weights
# A scored N-best: per hypothesis (text, units, CTC log-probability, LLM log-probability)
Scored = List[Tuple[str, Sequence[int], float, float]]
DEFAULT_WEIGHTS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
DEFAULT_BONUSES = (-1.0, 0.0, 1.0, 2.0, 3.0)


def pick(hyps: Scored, ctc_weight: float, length_bonus: float) -> str:
    """The text llm_rescore picks from one scored N-best at these settings ("" from an empty one)."""
    if not hyps:
        return ""
    return hyps[rescore([h[2] for h in hyps], [h[3] for h in hyps], [len(h[1]) for h in hyps], ctc_weight,
                        length_bonus)][0]


def choose(nbest: Dict[str, Scored], ctc_weight: float, length_bonus: float) -> Dict[str, str]:
    """{cut id: the text llm_rescore picks at these settings}."""
    return {cid: pick(hyps, ctc_weight, length_bonus) for cid, hyps in nbest.items()}


def oracle(nbest: Dict[str, Scored], refs: Dict[str, str], normalizer: str) -> Dict[str, str]:
    """{cut id: the hypothesis of its N-best with the fewest errors against the reference}."""
    from xasr.scoring.wer import score

    out = {}
    for cid, hyps in nbest.items():
        texts = [h[0] for h in hyps] or [""]
        errors = [score({cid: refs[cid]}, {cid: t}, normalizer).num_errors for t in texts]
        out[cid] = texts[errors.index(min(errors))]
    return out


@dataclass
class Tuning:
    """llm_rescore's error rate (%) at each (CTC weight, length bonus) of a grid on one set, the
    best point (ties: the larger CTC weight, then the smaller bonus), and two references: the
    CTC search alone (weight 1, bonus 0) and the N-best oracle (the hypothesis with the fewest
    errors chosen with the reference: what no weighting can beat)."""

    table: Dict[Tuple[float, float], float]
    unit: str  # "CER" or "WER"
    ctc_alone: float
    oracle: float

    @property
    def best(self) -> Tuple[float, float]:
        return min(self.table, key=lambda wb: (self.table[wb], -wb[0], wb[1]))

    def write(self, out_dir: Union[str, Path], set_name: str, title: str) -> Dict[str, Path]:
        """``tune-{set}.tsv`` (every grid point) and ``tune-{set}.png`` (error rate against the
        CTC weight, a line per bonus) in ``out_dir``."""
        from xasr.scoring.plot import plot_weight_grid

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tsv = out / f"tune-{set_name}.tsv"
        with open(tsv, "w") as f:
            f.write(f"ctc_weight\tlength_bonus\t%{self.unit}\n")
            for (w, b), v in sorted(self.table.items()):
                f.write(f"{w:g}\t{b:g}\t{v:.2f}\n")
        png = plot_weight_grid(self.table, self.unit, {"CTC search alone": self.ctc_alone, "N-best oracle": self.oracle},
                               out / f"tune-{set_name}.png", title)
        return {"tsv": tsv, "png": png}


def tune(nbest: Dict[str, Scored], refs: Dict[str, str], normalizer: str,
         weights: Sequence[float] = DEFAULT_WEIGHTS, bonuses: Sequence[float] = DEFAULT_BONUSES) -> Tuning:
    """Every grid point of llm_rescore on a set whose scored N-best lists are ``nbest``."""
    from xasr.scoring.wer import score

    if not weights or not bonuses or any(not 0.0 <= w <= 1.0 for w in weights):
        raise ValueError(f"the CTC weights must lie in [0, 1] and neither grid be empty, got {weights} and {bonuses}")
    rate = lambda hyps: 100 * score(refs, hyps, normalizer).error_rate  # noqa: E731
    ctc_alone = score(refs, choose(nbest, 1.0, 0.0), normalizer)
    return Tuning({(w, b): rate(choose(nbest, w, b)) for w in weights for b in bonuses}, ctc_alone.unit,
                  100 * ctc_alone.error_rate, rate(oracle(nbest, refs, normalizer)))
