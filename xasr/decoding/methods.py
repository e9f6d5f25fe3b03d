"""Every decoding method by name: a model, a batch and options in, a DecodeResult out.

In: a trained :class:`xasr.models.model.XLLMSpeechModel`, a batch (:mod:`xasr.data.dataset`), the
method's name, the model's sentencepiece units and :class:`xasr.decoding.options.DecodingOptions`
(the model config's when none are given). Out: a :class:`DecodeResult`: the transcripts, the work
done (``DecodeStats``), each utterance's no-speech probability, llm_rescore's scored N-best, and on
request the CTC log-probs (for word timestamps). Nothing is set on the model.

The methods (:data:`METHODS`, listed in :data:`DECODING_METHODS`):
``ctc_greedy`` and ``ctc_beam`` (the CTC head; the beam search fuses the n-gram LM and with
homophone-tied heads scores classes, :mod:`xasr.decoding.rescore`); ``cif_greedy`` (the C-Former's
head); ``llm_greedy`` and ``llm_beam`` (the LLM over the adapted C-Former vectors); ``llm_ctc`` (an
LLM beam search scored with the CTC prefix probabilities, :mod:`xasr.decoding.joint_ctc`);
``llm_rescore`` (ctc_beam's N-best rescored by the LLM; the LLM is not run at CTC weight 1, where
it has no say); ``llm_speculative`` (llm_greedy's output with a head's transcript as the draft the
LLM verifies) and ``llm_fast`` (the draft taken without the LLM when its head is confident,
:mod:`xasr.decoding.speculative`). Every LLM decoding is cut
where its output starts repeating (:mod:`xasr.decoding.loops`); with ``llm_vocab=units`` the LLM of the
``llm_*`` methods scores only the tokens the units spell (:mod:`xasr.decoding.vocab`).
"""
from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from xasr.data.dataset import Batch
from xasr.decoding.generate import generate_ids
from xasr.decoding.joint_ctc import CtcPrefixScorer, UnitMap, joint_ctc_generate
from xasr.decoding.llm_scoring import target_logprobs
from xasr.decoding.ngram import NgramLM
from xasr.decoding.options import DecodingOptions
from xasr.decoding.rescore import LmFusion, ctc_prefix_search, pick
from xasr.decoding.speculative import (DecodeStats, PassCounter, draft_ids, greedy_stats, head_confidence,
                                       speculative_decode)
from xasr.decoding.vocab import unit_vocabulary
from xasr.errors import XasrError
from xasr.utils.registry import Registry

NBest = List[Tuple[Tuple[int, ...], float]]  # (units, log-probability), best first


@dataclass
class DecodeResult:
    texts: List[str]
    stats: DecodeStats
    no_speech: Optional[List[float]] = None  # per utterance the CTC head's lowest blank posterior
    # llm_rescore: per utterance [(text, units, CTC log-probability, LLM log-probability)], CTC order
    nbest: Optional[List[list]] = None
    ctc: Optional[Tuple[Tensor, Tensor]] = None  # (log-probs (B, T, V), lengths) when asked for


class Search:
    """One batch under decoding: the encoder's output and CTC log-probs, and what the LLM methods
    share (the C-Former's vectors and texts, the LLM's input rows and length bounds), made once."""

    def __init__(self, model, batch: Batch, units, opts: DecodingOptions, llm_scores: bool = False) -> None:
        self.model, self.batch, self.units, self.opts = model, batch, units, opts
        self.llm_scores = llm_scores  # llm_rescore scores its N-best with the LLM even at CTC weight 1
        self.h, self.h_lens = model.encode_batch(batch)
        self.ctc_log_probs = model.ctc(self.h)

    @functools.cached_property
    def cf(self):
        m = self.model
        return m.cformer(self.h, self.h_lens, alphas=m.cif_alphas(self.h, self.h_lens, self.ctc_log_probs))

    @functools.cached_property
    def ctc_units(self) -> List[List[int]]:
        """The CTC head's greedy units per utterance (its text, a speculative or a prompt draft)."""
        return self.model.ctc.greedy_decode(self.ctc_log_probs, self.h_lens)

    @functools.cached_property
    def ctc_nbest(self) -> List[NBest]:
        """The CTC prefix search's N-best per utterance (ctc_beam, llm_rescore, a ``ctc_beam`` prompt draft)."""
        return ctc_nbest(self.model, self.ctc_log_probs, self.h_lens, self.opts, self.units)

    @property
    def ctc_beam_units(self) -> List[List[int]]:
        """The CTC prefix search's best path per utterance (ctc_beam's output)."""
        return [list(nb[0][0]) if nb else [] for nb in self.ctc_nbest]

    def prompt_drafts(self, method: str) -> Optional[List[List[int]]]:
        """The drafts the LLM's prompt holds (``opts.rescore_draft`` for llm_rescore, else
        ``opts.prompt_draft``), None for a model trained without them (``model.llm_draft``) or a draft
        of none."""
        which = self.opts.rescore_draft if method == "llm_rescore" else self.opts.prompt_draft
        if self.model.cfg.llm_draft == "none" or which == "none":
            return None
        if which == "ctc_beam":
            return self.ctc_beam_units
        return self.ctc_units

    @functools.cached_property
    def cif_texts(self) -> List[str]:
        return [self.units.decode(u) for u in self.model.cformer.greedy_units(self.cf.logits, self.cf.lens)]

    def require_llm(self, method: str):
        """The model, which must have been trained with the LLM (stage 2) for ``method``."""
        if self.model.llm is None or self.model.adapter is None:
            raise XasrError(f"{method} needs a model trained with the LLM (stage 2)")
        return self.model

    def llm_inputs(self, method: str):
        """(rows, length bounds, images) for the LLM: per utterance its adapted speech vectors
        and, for a model trained with drafts, its draft (:meth:`XLLMSpeechModel.llm_rows`; one
        zero vector for an empty row), the output bound, and its image vectors or None."""
        m = self.require_llm(method)
        rows = m.llm_rows(self.cf, self.prompt_drafts(method), pad_empty=True)
        bounds = [length_bound(m.llm, t, self.opts) for t in self.cif_texts]
        return rows, bounds, m.image_vectors(self.batch)

    def utterances(self) -> int:
        return int(self.h.shape[0])


Method = Callable[[Search], DecodeResult]
METHODS: Registry[Method] = Registry("decoding method")


def length_bound(llm, cif_text: str, opts: DecodingOptions) -> int:
    """The most LLM tokens an output may have: factor x the LLM tokens of the CIF head's text + margin."""
    n = len(llm.tokenizer.encode(cif_text, add_special_tokens=False)) if cif_text else 0
    return int(math.ceil(opts.length_bound_factor * n)) + opts.length_bound_margin


@functools.lru_cache(maxsize=4)
def _read_lm(path: str) -> NgramLM:
    return NgramLM.read_arpa(path)


@functools.lru_cache(maxsize=4)
def _pieces(units) -> Tuple[str, ...]:
    return tuple(units.id_to_piece(i) for i in range(units.get_piece_size()))


@functools.lru_cache(maxsize=4)
def _unit_map(units, tokenizer, target_case: str) -> UnitMap:
    return UnitMap(units, tokenizer, target_case)


def lm_fusion(model, units, opts: DecodingOptions) -> Optional[Callable[[], LmFusion]]:
    """A maker of one utterance's n-gram LM fusion for the CTC prefix search, or None when the
    model has no n-gram LM (or its weight and bonus are both 0). The LM is read once per path."""
    c = model.cfg.ngram
    if not c.path or (opts.lm_weight == 0 and opts.lm_token_bonus == 0):
        return None
    lm, pieces = _read_lm(c.path), _pieces(units)
    return lambda: LmFusion(lm, pieces, c.tokens, opts.lm_weight, opts.lm_token_bonus, c.oov_penalty)


def ctc_nbest(model, ctc_log_probs: Tensor, h_lens: Tensor, opts: DecodingOptions, units=None) -> List[NBest]:
    """Per utterance the CTC prefix beam search's N-best (``ctc_beam_size``), from the CTC head's
    log-probs (B, T, V). With an n-gram LM (``units``, the sentencepiece processor, needed) the LM
    is fused into the search and its part is in the scores; with a homophone scale below 1 and a
    head that ties homophones the search scores classes (:meth:`CtcPrefixScorer.of_classes`)."""
    log_probs = ctc_log_probs.float().cpu().numpy()  # (B, T, V)
    k = opts.ctc_beam_size
    fusion = lm_fusion(model, units, opts) if units is not None else None
    classes = model.unit_classes() if opts.homophone_scale != 1.0 else None
    blank = model.ctc.blank_id

    def scorer(lp):
        if classes is None:
            return CtcPrefixScorer(lp, blank)
        return CtcPrefixScorer.of_classes(lp, blank, classes, opts.homophone_scale)

    return [ctc_prefix_search(scorer(log_probs[b, :max(1, n)]), beam=k, nbest=k,
                              lm=fusion() if fusion is not None else None)
            for b, n in enumerate(h_lens.tolist())]


def _llm_texts(s: Search, ids) -> List[str]:
    texts = [s.model.llm.decode(r) for r in ids]
    return [t.upper() for t in texts] if s.model.cfg.llm.target_case == "lower" else texts


@METHODS.register("ctc_greedy")
def _ctc_greedy(s: Search) -> DecodeResult:
    texts = [s.units.decode(u) for u in s.ctc_units]
    return DecodeResult(texts, DecodeStats(utterances=s.utterances()))


@METHODS.register("ctc_beam")
def _ctc_beam(s: Search) -> DecodeResult:
    texts = [s.units.decode(u) for u in s.ctc_beam_units]
    return DecodeResult(texts, DecodeStats(utterances=s.utterances()))


@METHODS.register("cif_greedy")
def _cif_greedy(s: Search) -> DecodeResult:
    return DecodeResult(s.cif_texts, DecodeStats(utterances=s.utterances()))


def _generate(s: Search, method: str, num_beams: int) -> DecodeResult:
    rows, bounds, images = s.llm_inputs(method)
    emb, mask = s.model.llm.generation_inputs(rows, images)
    with PassCounter(s.model.llm.model) as counter:
        ids = generate_ids(s.model.llm, emb, mask, bounds, num_beams=num_beams, repeat_ngram=s.opts.repeat_ngram)
    return DecodeResult(_llm_texts(s, ids), greedy_stats(counter, ids))


@METHODS.register("llm_greedy")
def _llm_greedy(s: Search) -> DecodeResult:
    return _generate(s, "llm_greedy", 1)


@METHODS.register("llm_beam")
def _llm_beam(s: Search) -> DecodeResult:
    return _generate(s, "llm_beam", s.opts.beam_size)


@METHODS.register("llm_ctc")
def _llm_ctc(s: Search) -> DecodeResult:
    rows, bounds, images = s.llm_inputs("llm_ctc")
    llm, o = s.model.llm, s.opts
    log_probs = s.ctc_log_probs.float().cpu().numpy()  # (B, T, V)
    emb, mask = llm.generation_inputs(rows, images)
    stats = DecodeStats()
    ids = joint_ctc_generate(
        llm, emb, mask, [log_probs[b, :max(1, n)] for b, n in enumerate(s.h_lens.tolist())],
        _unit_map(s.units, llm.tokenizer, s.model.cfg.llm.target_case), bounds, beam=o.beam_size,
        ctc_weight=o.joint_ctc_weight, pre_beam=o.joint_pre_beam, length_bonus=o.joint_length_bonus,
        repeat_ngram=o.repeat_ngram, blank=s.model.ctc.blank_id, stats=stats)
    return DecodeResult(_llm_texts(s, ids), stats)


@METHODS.register("llm_rescore")
def _llm_rescore(s: Search) -> DecodeResult:
    """Each utterance's N-best texts scored by the LLM (the prompt once, the hypotheses as one
    prefix tree: :func:`xasr.decoding.llm_scoring.target_logprobs`), the best under the combined score
    (:func:`xasr.decoding.rescore.pick`) returned."""
    llm = s.require_llm("llm_rescore").llm
    nbests = s.ctc_nbest
    texts = [[s.units.decode(list(y)) for y, _ in nb] for nb in nbests]
    with PassCounter(llm.model) as counter:
        if s.opts.rescore_ctc_weight >= 1.0 and not s.llm_scores:
            # the LLM's scores count (1 - w) = 0 times: the choice is the same without computing them
            # (nor the C-Former and adapter rows they would read)
            llm_scores = [[0.0] * len(t) for t in texts]
        else:
            rows, _, images = s.llm_inputs("llm_rescore")
            llm_scores = target_logprobs(llm, rows, texts, images)
    scored = [[(x, y, c, l) for x, (y, c), l in zip(t, nb, ls)] for nb, t, ls in zip(nbests, texts, llm_scores)]
    out = [pick(sc, s.opts.rescore_ctc_weight, s.opts.rescore_length_bonus) for sc in scored]
    # output tokens: the LLM's tokens of each chosen text, without the end of turn
    return DecodeResult(out, greedy_stats(counter, [llm.target_ids(t)[:-1] for t in out]), nbest=scored)


def _speculative(s: Search, method: str, threshold: Optional[float]) -> DecodeResult:
    rows, bounds, images = s.llm_inputs(method)
    if images is not None and any(v is not None for v in images):
        raise XasrError(f"{method} does not take images yet: decode pictures with llm_greedy or llm_beam")
    if s.opts.speculative_draft in ("ctc", "ctc_beam"):
        paths = s.ctc_units if s.opts.speculative_draft == "ctc" else s.ctc_beam_units
        draft_texts = [s.units.decode(u) for u in paths]
        confidence = head_confidence(s.ctc_log_probs, s.h_lens)
    else:
        draft_texts, confidence = s.cif_texts, head_confidence(s.cf.logits, s.cf.lens)
    llm = s.model.llm
    ids, stats = speculative_decode(llm, rows, [draft_ids(llm, t) for t in draft_texts], bounds, confidence,
                                    threshold, repeat_ngram=s.opts.repeat_ngram)
    return DecodeResult(_llm_texts(s, ids), stats)


@METHODS.register("llm_speculative")
def _llm_speculative(s: Search) -> DecodeResult:
    return _speculative(s, "llm_speculative", None)


@METHODS.register("llm_fast")
def _llm_fast(s: Search) -> DecodeResult:
    return _speculative(s, "llm_fast", s.opts.fast_path_threshold)


# the built-in methods, in the order help texts list them
DECODING_METHODS = ("ctc_greedy", "ctc_beam", "cif_greedy", "llm_greedy", "llm_beam", "llm_ctc", "llm_rescore",
                    "llm_speculative", "llm_fast")


def method_names() -> List[str]:
    """Every registered method: the built-in ones, then any registered since."""
    return list(DECODING_METHODS) + [n for n in METHODS.names() if n not in DECODING_METHODS]


def check_methods(methods: Sequence[str], option: str = "--methods") -> None:
    """Refuse unknown decoding method names before anything is loaded."""
    known = method_names()
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise XasrError(f"{option}: unknown decoding method {', '.join(map(repr, unknown))}; choose from "
                        f"{', '.join(known)}")


def options_for(model, homophone_scale: Optional[float] = None, **changes) -> DecodingOptions:
    """The model config's decoding options with ``changes`` (None: unchanged). A homophone scale
    below 1 asked for here needs a CTC head that ties homophones."""
    if homophone_scale is not None and homophone_scale != 1.0 and model.unit_classes() is None:
        raise XasrError("a homophone scale needs a CTC head that ties homophones (model.unit_classes); "
                        "this model has none")
    return DecodingOptions.from_config(model.cfg).replace(homophone_scale=homophone_scale, **changes)


@torch.no_grad()
def decode(model, batch: Batch, method: str, units, opts: Optional[DecodingOptions] = None,
           keep_ctc: bool = False, llm_scores: bool = False) -> DecodeResult:
    """The transcripts of a batch by ``method`` (see the module's docstring), with ``opts`` or
    the model config's options; ``keep_ctc``: the CTC log-probs and lengths come back too.
    ``llm_scores``: llm_rescore's N-best carries the LLM's scores even where its CTC weight is 1
    (which gives them no say, so they are not computed otherwise), for choosing the weights."""
    check_methods([method], "method")
    s = Search(model, batch, units, opts if opts is not None else DecodingOptions.from_config(model.cfg),
               llm_scores=llm_scores)
    no_speech = model.ctc.no_speech_prob(s.ctc_log_probs, s.h_lens)
    restrict = s.opts.llm_vocab == "units" and model.llm is not None and method.startswith("llm_")
    with model.llm.output_vocab(unit_vocabulary(model.llm, units)) if restrict else contextlib.nullcontext():
        result = METHODS.get(method)(s)
    result.no_speech = no_speech
    result.ctc = (s.ctc_log_probs, s.h_lens) if keep_ctc else None
    return result
