"""The settings of a decoding search, as one frozen value.

In: a model config (:class:`xasr.models.model.ModelConfig`, whose search fields are the defaults a
trained model directory carries, its ``decoding.json`` applied) and the changes a caller asks for.
Out: a :class:`DecodingOptions` the decoding methods (:mod:`xasr.decoding.methods`) read, checked
when it is made. Changing a setting makes a new value (:meth:`DecodingOptions.replace`); the model
is never changed.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from xasr.errors import XasrError

DRAFTS = ("cif", "ctc", "ctc_beam")  # speculative_draft: the C-Former head, the CTC head, the CTC prefix search
PROMPT_DRAFTS = ("ctc_greedy", "ctc_beam", "none")  # the draft in the LLM's prompt (ModelConfig.prompt_draft)
VOCABS = ("full", "units")  # llm_vocab: the whole vocabulary, or the tokens the units spell (xasr.decoding.vocab)


@dataclass(frozen=True)
class DecodingOptions:
    """What each method reads (the meaning of each is at its field in ModelConfig)."""

    beam_size: int  # llm_beam, llm_ctc
    length_bound_factor: float  # LLM decodings: output bound factor x LLM tokens of the CIF text + margin
    length_bound_margin: int
    repeat_ngram: int  # LLM decodings: cut where a run of this many tokens repeats; 0: off
    joint_ctc_weight: float  # llm_ctc
    joint_pre_beam: int
    joint_length_bonus: float
    ctc_beam_size: int  # ctc_beam, llm_rescore: beams and N-best size
    homophone_scale: float  # ctc_beam, llm_rescore with homophone-tied heads; 1: off
    rescore_ctc_weight: float  # llm_rescore
    rescore_length_bonus: float
    lm_weight: float  # the n-gram LM in the CTC prefix search (ModelConfig.ngram.weight)
    lm_token_bonus: float  # (ModelConfig.ngram.token_bonus)
    speculative_draft: str  # llm_speculative, llm_fast: "cif", "ctc" or "ctc_beam"
    fast_path_threshold: float  # llm_fast
    llm_vocab: str  # every LLM decoding: "full" or "units" (xasr.decoding.vocab)
    prompt_draft: str  # LLM decodings of a model trained with drafts: "ctc_greedy", "ctc_beam" or "none"
    rescore_draft: str  # the same for llm_rescore

    def __post_init__(self) -> None:
        for name in ("joint_ctc_weight", "rescore_ctc_weight"):
            w = getattr(self, name)
            if not (isinstance(w, (int, float)) and 0.0 <= w <= 1.0):
                raise XasrError(f"the CTC weight must be in [0, 1], not {w}")
        for name in ("joint_length_bonus", "rescore_length_bonus"):
            if not math.isfinite(getattr(self, name)):
                raise XasrError(f"the length bonus must be a finite number, not {getattr(self, name)}")
        if not (math.isfinite(self.lm_weight) and self.lm_weight >= 0):
            raise XasrError(f"the n-gram LM's weight must be a finite number >= 0, not {self.lm_weight}")
        if not math.isfinite(self.lm_token_bonus):
            raise XasrError(f"the n-gram LM's token bonus must be a finite number, not {self.lm_token_bonus}")
        if not 0.0 <= self.homophone_scale <= 1.0:
            raise XasrError(f"the homophone scale must be in [0, 1], not {self.homophone_scale}")
        if self.llm_vocab not in VOCABS:
            raise XasrError(f"llm_vocab must be {' or '.join(VOCABS)}, not {self.llm_vocab!r}")
        for name in ("prompt_draft", "rescore_draft"):
            if getattr(self, name) not in PROMPT_DRAFTS:
                raise XasrError(f"{name} must be {', '.join(PROMPT_DRAFTS)}, not {getattr(self, name)!r}")
        if self.speculative_draft not in DRAFTS:
            raise XasrError(f"speculative_draft must be {', '.join(DRAFTS)}, not {self.speculative_draft!r}")
        for name in ("beam_size", "ctc_beam_size", "joint_pre_beam"):
            if getattr(self, name) < 1:
                raise XasrError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.repeat_ngram < 0:
            raise XasrError(f"repeat_ngram must be >= 0 (0: off), not {self.repeat_ngram}")

    @classmethod
    def from_config(cls, model_cfg) -> "DecodingOptions":
        """The options a model config sets (its search fields, and its n-gram LM's weights)."""
        names = [f.name for f in dataclasses.fields(cls) if not f.name.startswith("lm_")]
        return cls(lm_weight=float(model_cfg.ngram.weight), lm_token_bonus=float(model_cfg.ngram.token_bonus),
                   **{n: getattr(model_cfg, n) for n in names})

    def replace(self, **changes) -> "DecodingOptions":
        """A copy with ``changes`` made (a None value leaves that setting as it is), checked."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def with_ctc_weights(self, ctc_weight=None, length_bonus=None) -> "DecodingOptions":
        """The CTC weight and length bonus of both llm_ctc and llm_rescore (None: unchanged)."""
        return self.replace(joint_ctc_weight=ctc_weight, rescore_ctc_weight=ctc_weight,
                            joint_length_bonus=length_bonus, rescore_length_bonus=length_bonus)
