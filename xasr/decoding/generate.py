"""Greedy and beam-search generation with the frozen LLM, each row to its own length bound.

In: a :class:`xasr.models.llm.FrozenLLM`, left-padded embedded prompts and their attention mask
(``FrozenLLM.generation_inputs``), per row the most tokens it may write, a beam size and the
repeat cut. Out: per row the generated token ids, without the end-of-turn token, cut where a run
of ``repeat_ngram`` tokens starts repeating (:mod:`xasr.decoding.loops`).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from xasr.decoding.loops import cut_repeat, has_repeat
from xasr.models.llm import FrozenLLM


@torch.no_grad()
def generate_ids(llm: FrozenLLM, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                 max_new_tokens: Sequence[int], num_beams: int = 1,
                 repeat_ngram: int = 0) -> List[List[int]]:
    """Generated token ids (without the stop token) per row. Each row stops at the
    end-of-turn token or at its own bound ``max_new_tokens[b]``, whichever comes first.
    ``repeat_ngram`` > 0: a row is cut where a run of that many tokens starts a second
    time (:mod:`xasr.decoding.loops`); greedy rows stop as soon as one appears."""
    from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

    limits = torch.tensor(list(max_new_tokens), device=inputs_embeds.device)
    stop_id = llm.stop_id

    class RowLimit(LogitsProcessor):
        start: Optional[int] = None

        def __call__(self, input_ids, scores):
            # the first call sees no generated token yet: its length is the offset to subtract
            # (0 when generating from embeddings, the prompt length otherwise); with beams,
            # rows are batch * num_beams in batch-major order
            if self.start is None:
                self.start = input_ids.shape[1]
            step = input_ids.shape[1] - self.start
            lim = limits.repeat_interleave(scores.shape[0] // limits.shape[0])
            done = step >= lim
            if done.any():
                scores[done] = float("-inf")
                scores[done, stop_id] = 0.0
            return scores

    class Loop(StoppingCriteria):  # greedy only: beams are cut at the end
        start: Optional[int] = None

        def __call__(self, input_ids, scores, **kwargs):
            if self.start is None:  # called after the first token: one generated so far
                self.start = input_ids.shape[1] - 1
            gen = input_ids[:, self.start:].tolist()
            return torch.tensor([has_repeat(g, repeat_ngram) for g in gen], device=input_ids.device)

    stopping = StoppingCriteriaList([Loop()] if repeat_ngram > 0 and num_beams == 1 else [])
    out = llm.model.generate(
        inputs_embeds=inputs_embeds, attention_mask=attention_mask,
        max_new_tokens=int(limits.max()) + 1, num_beams=num_beams, do_sample=False,
        eos_token_id=stop_id, pad_token_id=llm.pad_id,
        logits_processor=LogitsProcessorList([RowLimit()]), stopping_criteria=stopping,
    )
    rows = []
    for row in out.tolist():
        if stop_id in row:
            row = row[:row.index(stop_id)]
        rows.append(cut_repeat(row, repeat_ngram))
    return rows
