"""Joint LLM + CTC beam search: the frozen LLM proposes, the CTC head's prefix scores weigh in.

In: the embedded, left-padded generation prompts of a batch (``FrozenLLM.generation_inputs``),
each utterance's CTC log-probabilities (T_b, V_units) from the stage-1 head, a
:class:`UnitMap` between LLM text and those units, and each utterance's length bound.
Out: per utterance the LLM token ids of the best hypothesis (without the stop token).

How (hybrid CTC/attention decoding, Watanabe et al. 2017, "Hybrid CTC/Attention Architecture
for End-to-End Speech Recognition", with the LLM in the attention decoder's place): a beam
search over LLM tokens in which a hypothesis scores

    (1 - w) * log P_LLM(tokens | prompt, speech) + w * log P_CTC(units of its text ...)
        + length_bonus * (number of those units)

where the CTC term is the *prefix* probability of its units (the probability that the
transcript starts with them) while it runs, and the full CTC probability once it ends. Each
step, every running hypothesis extends by the ``pre_beam`` most likely LLM tokens, the tokens
that write the CTC head's most likely next units (the LLM alone may rank the right one low),
and the stop token; the ``beam`` best extensions of the utterance survive (ended ones leave the
search). Without a length bonus, and with character units, no score can rise as a hypothesis
grows, so an utterance stops as soon as no running hypothesis beats its best ended one;
otherwise when every hypothesis has ended or reached the length bound. Token sequences that
spell the same text are one hypothesis; a token that writes nothing the CTC head scores (a
special token, a space between characters) or ends inside a character is not tried.

The LLM and the CTC head do not share units: the CTC term is computed on the units of the
hypothesis *text* (:meth:`UnitMap.units`), so any LLM tokenizer works with any unit inventory.
With word-piece units (English BPE) the word being written is scored without its last piece
until the hypothesis ends, since the pieces of a word can change as it grows.

The CTC prefix probabilities (:class:`CtcPrefixScorer`) are exact and computed without a
Python loop over frames: the recursions are linear in probability space, so each is a
cumulative log-sum-exp (``numpy.logaddexp.accumulate``) once divided by the running product
of the frame probabilities.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from xasr.decoding.homophones import class_log_probs
from xasr.decoding.loops import has_repeat
from xasr.decoding.speculative import DecodeStats
from xasr.models.llm import cache_kwarg

NEG_INF = -np.inf
MAX_WORD_CHARS = 30  # word-piece units: a hypothesis word longer than this is a runaway
Units = Tuple[int, ...]


def _log_cumsum(x: np.ndarray) -> np.ndarray:
    """log(cumsum(exp(x))) along axis 0."""
    return np.logaddexp.accumulate(x, axis=0)


class CtcPrefixScorer:
    """CTC prefix and full log-probabilities of unit sequences for one utterance.

    ``log_probs`` (T, V): the CTC head's frame log-probabilities (within the utterance's length).
    States (the forward variables r^n, r^b of Watanabe et al. over all frames) are kept per
    unit sequence, so a hypothesis that extends a scored one costs one extension.
    ``classes`` (V,): units of one class (homophones, :mod:`xasr.decoding.homophones`) count as
    the same label, so two of them in a row need a blank between them, as a repeated unit does.
    """

    def __init__(self, log_probs: np.ndarray, blank: int = 0, classes: Optional[np.ndarray] = None) -> None:
        lp = np.asarray(log_probs, dtype=np.float64)
        if lp.ndim != 2 or lp.shape[0] == 0:
            raise ValueError(f"CTC log-probabilities must be (T > 0, V), not {lp.shape}")
        self.lp = lp
        self.blank = blank
        self.classes = classes
        self.T = lp.shape[0]
        self.blank_cum = np.cumsum(lp[:, blank])  # (T,) log prod of blanks up to t
        self.probs: Optional[np.ndarray] = None  # exp(lp), made when first needed
        # state: (r^n (T,), r^b (T,), prefix log-probability)
        self.states: Dict[Units, Tuple[np.ndarray, np.ndarray, float]] = {
            (): (np.full(self.T, NEG_INF), self.blank_cum.copy(), 0.0)}

    @classmethod
    def of_classes(cls, log_probs: np.ndarray, blank: int, classes: np.ndarray, scale: float) -> "CtcPrefixScorer":
        """The scorer of a head that ties homophones: a class is one label, and a unit scores its
        class's log-probability plus ``scale`` x its share of the class
        (:func:`xasr.decoding.homophones.class_log_probs`)."""
        return cls(class_log_probs(log_probs, classes, scale), blank, classes=classes)

    def prefix_score(self, units: Units) -> float:
        """log P(the transcript starts with ``units``)."""
        self.ensure([units])
        return self.states[units][2]

    def full_score(self, units: Units) -> float:
        """log P(the transcript is ``units``)."""
        self.ensure([units])
        rn, rb, _ = self.states[units]
        return float(np.logaddexp(rn[-1], rb[-1]))

    def ensure(self, keys: Sequence[Units]) -> None:
        """Compute the states of ``keys`` (and of their missing prefixes), parents before
        children, the children of one parent in one vectorised extension."""
        missing = set()
        for k in keys:
            while k not in self.states and k not in missing:
                missing.add(k)
                k = k[:-1]
        for n in sorted({len(k) for k in missing}):
            by_parent: Dict[Units, List[int]] = {}
            for k in missing:
                if len(k) == n:
                    by_parent.setdefault(k[:-1], []).append(k[-1])
            for parent, units in by_parent.items():
                self._extend(parent, units)

    def next_unit_scores(self, parent: Units, units: Optional[np.ndarray] = None) -> np.ndarray:
        """Prefix log-probabilities of ``parent`` + each unit, without keeping their states: what
        a search uses to rank extensions. ``units`` (C,): the units to score (default all, (V,),
        the blank's entry -inf); the blank must not be among them."""
        if units is not None:
            return self.extension_scores([parent], units)[0]
        psi = self.extension_scores([parent], np.arange(self.lp.shape[1]))[0]
        psi[self.blank] = NEG_INF
        return psi

    def extension_scores(self, parents: Sequence[Units], units: np.ndarray) -> np.ndarray:
        """(H, C) prefix log-probabilities of each of the H ``parents`` + each of the C ``units``
        (not the blank). A unit's prefix probability sums, over the frame t where it is first
        emitted, phi(t - 1) p_t(unit), phi being the probability that the parent has been
        written by frame t - 1 in a way the unit can follow: for all parents and units at once
        a product (H, T - 1) x (T - 1, C) in probability space, each row scaled by its maximum."""
        self.ensure(parents)
        c = np.asarray(units)
        psi = self._emission_sum(np.stack([np.logaddexp(rn, rb)[:-1] for rn, rb, _ in
                                           (self.states[p] for p in parents)]), c)
        for h, p in enumerate(parents):
            if not p:  # the first unit may also be emitted at frame 0
                psi[h] = np.logaddexp(psi[h], self.lp[0, c])
                continue
            same = np.nonzero(self._same_label(c, p[-1]))[0]
            if len(same):  # a repeated unit needs a blank in between: phi is r^b alone
                psi[h, same] = self._emission_sum(self.states[p][1][None, :-1], c[same])[0]
        return psi

    def _same_label(self, c: np.ndarray, last: int) -> np.ndarray:
        """(C,) bool: which of the units ``c`` repeat the label of unit ``last``."""
        if self.classes is None:
            return c == last
        return self.classes[c] == self.classes[last]

    def _emission_sum(self, phi: np.ndarray, c: np.ndarray) -> np.ndarray:
        """log sum_t exp(phi[:, t]) p_{t+1}(c): phi (H, T - 1) -> (H, C)."""
        if phi.shape[1] == 0:  # one frame: nothing is emitted after another frame
            return np.full((phi.shape[0], len(c)), NEG_INF)
        if self.probs is None:
            self.probs = np.exp(self.lp)
        m = phi.max(axis=1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        with np.errstate(divide="ignore"):
            return np.log(np.exp(phi - m) @ self.probs[1:, c]) + m

    def _extend(self, parent: Units, units: List[int]) -> None:
        c = np.asarray(units)
        psi = self.extension_scores([parent], c)[0]
        rn_g, rb_g, _ = self.states[parent]
        lp_c = self.lp[:, c]  # (T, C)
        # phi (T, C): the parent written by frame t in a way the unit can follow
        phi = np.repeat(np.logaddexp(rn_g, rb_g)[:, None], len(c), axis=1)
        if parent:
            phi[:, self._same_label(c, parent[-1])] = rb_g[:, None]  # a repeated label needs a blank in between
        init = lp_c[0] if not parent else np.full(len(c), NEG_INF)  # r^n_0
        # r^n_t = (r^n_{t-1} + phi_{t-1}) p_t(c): with C_t = sum_{u<=t} log p_u(c), r^n_t - C_t is a
        # running log-sum of phi_{s-1} - C_{s-1}
        cum = np.cumsum(lp_c, axis=0)  # (T, C)
        terms = np.concatenate([(init - cum[0])[None], phi[:-1] - cum[:-1]], axis=0)  # (T, C)
        rn = _log_cumsum(terms) + cum
        # r^b_t = (r^b_{t-1} + r^n_{t-1}) p_t(blank), r^b_0 = 0
        bc = self.blank_cum[:, None]
        bterms = np.concatenate([np.full((1, len(c)), NEG_INF), rn[:-1] - bc[:-1]], axis=0)
        rb = _log_cumsum(bterms) + bc
        for j, u in enumerate(units):
            self.states[parent + (int(u),)] = (rn[:, j], rb[:, j], float(psi[j]))


@dataclass
class _Hyp:
    ids: List[int] = field(default_factory=list)
    llm: float = 0.0  # log P_LLM of ids
    units: Units = ()  # units the CTC term has scored
    score: float = 0.0
    row: int = 0  # row of the LLM batch (cache) that holds its context


@dataclass
class _Utt:
    scorer: CtcPrefixScorer
    limit: int
    running: List[_Hyp]
    ended: List[_Hyp] = field(default_factory=list)
    done: bool = False


@torch.no_grad()
def joint_ctc_generate(llm, inputs_embeds: Tensor, attention_mask: Tensor, ctc_log_probs: Sequence[np.ndarray],
                       unit_map: UnitMap, max_new_tokens: Sequence[int], beam: int = 4, ctc_weight: float = 0.5,
                       pre_beam: int = 8, ctc_pre_beam: Optional[int] = None, length_bonus: float = 0.0,
                       repeat_ngram: int = 0, blank: int = 0, stats: Optional[DecodeStats] = None
                       ) -> List[List[int]]:
    """Joint LLM + CTC beam search; returns per row the best hypothesis' LLM token ids.

    inputs_embeds (B, L, D), attention_mask (B, L): left-padded prompts; ctc_log_probs: per row
    (T_b, V_units); unit_map: between LLM text and the CTC units (:class:`UnitMap`);
    max_new_tokens: per row bound (a hypothesis that reaches it must stop); ctc_weight w in
    [0, 1]; pre_beam: the LLM's most likely tokens tried per hypothesis, and the tokens of the
    CTC head's ``ctc_pre_beam`` (default ``pre_beam``) most likely next units; length_bonus:
    added per CTC unit of a hypothesis (against the deletions both terms favour); repeat_ngram
    > 0: an extension that repeats a run of that many tokens is not kept (:mod:`xasr.decoding.loops`).
    """
    if not 0.0 <= ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight must be in [0, 1], not {ctc_weight}")
    if beam < 1 or pre_beam < 1:
        raise ValueError("beam and pre_beam must be at least 1")
    model = llm.model
    stop = llm.stop_id
    B = inputs_embeds.shape[0]
    dev = inputs_embeds.device
    if B == 0:
        return []
    from transformers import DynamicCache

    cache_kw = cache_kwarg(model)
    table = model.get_input_embeddings()
    w = ctc_weight
    utts = [_Utt(CtcPrefixScorer(ctc_log_probs[b], blank), int(max_new_tokens[b]), [_Hyp(row=b)]) for b in range(B)]
    cache = DynamicCache()
    mask = attention_mask.long()
    pos = (mask.sum(dim=1) - 1).clone()  # (rows,) position id of the last input
    x = inputs_embeds
    position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    if stats is not None:
        stats.utterances += B
    text_cache: Dict[Tuple[int, ...], Tuple[str, Optional[Units]]] = {}
    ctc_k = pre_beam if ctc_pre_beam is None else ctc_pre_beam
    # with a length bonus, or word pieces (whose unfinished word's pieces may change), a score can rise
    exact_stop = length_bonus <= 0 and not unit_map.word_pieces

    def units_of(ids: List[int], final: bool) -> Tuple[str, Optional[Units]]:
        key = (final,) + tuple(ids)
        if key not in text_cache:
            text = llm.decode(ids)
            text_cache[key] = (text, unit_map.units(text, final))
        return text_cache[key]

    while True:
        logits = model(inputs_embeds=x, attention_mask=mask, position_ids=position_ids, use_cache=True,
                       logits_to_keep=1, **{cache_kw: cache}).logits[:, -1].float()  # (R, V)
        logp = torch.log_softmax(logits, dim=-1)
        if stats is not None:
            stats.forward_calls += 1
            stats.row_passes += int(logp.shape[0])
            stats.fed_positions += int(logp.shape[0]) * int(x.shape[1])
        top_ids = logp.topk(min(pre_beam, logp.shape[-1]), dim=-1).indices.cpu().tolist()
        logp_np = logp.cpu().numpy()
        # candidate extensions, per utterance: (parent hyp, token, llm score, units, final)
        cands: List[List[tuple]] = []
        for u in utts:
            cu = []
            if not u.done:
                for h in u.running:
                    must_stop = len(h.ids) >= u.limit
                    toks = set() if must_stop else set(top_ids[h.row])
                    text, base = units_of(h.ids, True)
                    if not must_stop and ctc_k > 0:  # what the CTC head would write next
                        nxt = u.scorer.next_unit_scores(h.units if base is None else base)
                        for unit in np.argsort(-nxt)[:ctc_k].tolist():
                            t = unit_map.token(unit, not text.strip())
                            if t is not None:
                                toks.add(t)
                    toks.discard(stop)
                    cu.append((h, stop, h.llm + float(logp_np[h.row, stop]), h.units if base is None else base,
                               True))
                    for t in sorted(toks):
                        ids = h.ids + [t]
                        if repeat_ngram > 0 and has_repeat(ids, repeat_ngram):
                            continue
                        new_text, units = units_of(ids, False)
                        if units is None or "\ufffd" in new_text:
                            continue  # ends inside a character (byte tokens): not searched
                        if unit_map.word_pieces:  # units lag a piece behind: the text must grow
                            grew = len("".join(new_text.split())) > len("".join(text.split()))
                            words = new_text.split()
                            if words and len(words[-1]) > MAX_WORD_CHARS:
                                continue
                        else:
                            grew = len(units) > len(h.units)
                        if not grew:
                            continue  # writes nothing the CTC head scores (a special token, a space)
                        cu.append((h, t, h.llm + float(logp_np[h.row, t]), units, False))
            cands.append(cu)
        # CTC terms, computed together per utterance
        next_running: List[List[_Hyp]] = []
        for u, cu in zip(utts, cands):
            if u.done:
                next_running.append([])
                continue
            u.scorer.ensure([c[3] for c in cu])
            scored = []
            for h, t, llm_score, units, final in cu:
                ctc = u.scorer.full_score(units) if final else u.scorer.prefix_score(units)
                score = (1 - w) * llm_score + w * ctc + length_bonus * len(units)
                scored.append((score, h.ids if final else h.ids + [t], llm_score, units, final, h.row))
            scored.sort(key=lambda s: -s[0])
            seen, keep = set(), []
            for score, ids, llm_score, units, final, row in scored:
                key = (final, unit_map.spelling(units_of(ids, final)[0]))
                if key in seen:  # token sequences that spell the same text: only the best one stays
                    continue
                seen.add(key)
                hyp = _Hyp(ids=ids, llm=llm_score, units=units, score=score, row=row)
                (u.ended if final else keep).append(hyp)
                if len(seen) == beam:
                    break
            if exact_stop:  # scores only fall as a hypothesis grows: one below the best ended never wins
                best_end = max((e.score for e in u.ended), default=-math.inf)
                keep = [k for k in keep if k.score > best_end]
            u.done = not keep
            u.running = keep
            next_running.append(keep)
        rows = [h.row for hs in next_running for h in hs]
        if not rows:
            break
        sel = torch.tensor(rows, dtype=torch.long, device=dev)
        cache.batch_select_indices(sel)
        mask = torch.cat([mask[sel], torch.ones(len(rows), 1, dtype=mask.dtype, device=dev)], dim=1)
        pos = pos[sel] + 1
        position_ids = pos[:, None]
        tok = torch.tensor([h.ids[-1] for hs in next_running for h in hs], dtype=torch.long, device=dev)
        x = table(tok)[:, None].to(inputs_embeds.dtype)  # (R, 1, D)
        r = 0
        for hs in next_running:
            for h in hs:
                h.row = r
                r += 1
    outs = []
    for u in utts:
        pool = u.ended or u.running
        best = max(pool, key=lambda h: h.score) if pool else _Hyp()
        outs.append(best.ids)
    if stats is not None:
        stats.output_tokens += sum(len(o) for o in outs)
    return outs


class UnitMap:
    """Between an LLM's text and a sentencepiece unit inventory (the CTC head's).

    ``units(text, final)``: the unit ids the CTC term scores for an LLM hypothesis text, or None
    when the text ends inside a character (a partial byte sequence). With word-piece units
    (pieces that start with the word-boundary mark) the last word of a running hypothesis may
    still grow, and its pieces can change as it does: it is scored without its last piece, and
    a word longer than ``MAX_WORD_CHARS`` is not searched. Character units drop spaces.
    ``token(unit, at_start)``: the LLM token that writes a unit, where one token does (None
    otherwise), so the CTC head can propose tokens the LLM ranks low.
    ``spelling(text)``: the text without the spacing the units ignore (hypotheses that differ
    only there are one hypothesis).
    ``target_case="lower"``: the LLM writes lower case, the units are upper case.
    """

    def __init__(self, units, tokenizer, target_case: str = "keep") -> None:
        self.sp = units
        self.tokenizer = tokenizer
        self.lower = target_case == "lower"
        self.pieces = [units.id_to_piece(i) for i in range(units.get_piece_size())]
        self.word_pieces = any(p.startswith("\u2581") and len(p) > 1 for p in self.pieces)
        self._tokens: Dict[Tuple[int, bool], Optional[int]] = {}

    def spelling(self, text: str) -> str:
        """The text up to spacing, which the units do not see (none between characters)."""
        return " ".join(text.split()) if self.word_pieces else "".join(text.split())

    def units(self, text: str, final: bool) -> Optional[Units]:
        if text.endswith("\ufffd"):
            return None
        if self.lower:
            text = text.upper()
        if self.word_pieces:
            text = " ".join(text.split())
            if not final:  # the unfinished last word: all its pieces but the last
                cut = text.rfind(" ")
                done = tuple(self.sp.encode(text[:cut])) if cut > 0 else ()
                return done + tuple(self.sp.encode(text[cut + 1:]))[:-1]
        else:
            text = "".join(text.split())
        return tuple(self.sp.encode(text)) if text else ()

    def token(self, unit: int, at_start: bool) -> Optional[int]:
        key = (unit, at_start)
        if key not in self._tokens:
            piece = self.pieces[unit]
            text = piece.replace("\u2581", " ")
            if self.lower:
                text = text.lower()
            if at_start or not self.word_pieces:
                text = text.lstrip(" ")
            ids = self.tokenizer.encode(text, add_special_tokens=False) if text.strip() else []
            self._tokens[key] = ids[0] if len(ids) == 1 else None
        return self._tokens[key]
