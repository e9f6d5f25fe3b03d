"""Self-speculative greedy LLM decoding: the stage-1 heads draft, the frozen LLM verifies.

In: the embedded, left-padded generation prompts of a batch (``FrozenLLM.generation_inputs``),
one draft per utterance as LLM token ids (:func:`draft_ids`: the CIF or CTC head's text
re-tokenised exactly like a training target, end-of-turn token last), and each utterance's
length bound (:func:`xasr.decoding.methods.length_bound`).
Out: per utterance the LLM token ids that greedy decoding gives
(:func:`xasr.decoding.generate.generate_ids` with ``num_beams=1``), and :class:`DecodeStats`
(passes, drafted and accepted tokens).

Speculative decoding (arXiv 2211.17192) with the model's own heads as the drafter: each pass
feeds the last output token and the draft's continuation from where the output has reached in
it (:func:`align_draft`); the longest prefix equal to the LLM's argmax choices is accepted, plus
the LLM's own token at the first disagreement. Rows share one KV cache: rejected positions are
masked out, position ids count each row's valid positions, finished rows leave and the cache is
compacted when holes dominate (at once for sliding-window LLMs). A token is output only when it
is the LLM's argmax after exactly the tokens before it, so the output is greedy's; positions
whose top-two logits are closer than :data:`TIE_MARGIN` are recomputed as single-token steps,
since multi-token and single-token passes differ in the last float32 bits (exact agreement
needs float32 weights; bfloat16 ties are too frequent).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from xasr.decoding.loops import cut_repeat, has_repeat
from xasr.models.llm import base_model, cache_kwarg, has_sliding_window
from xasr.errors import XasrError

logger = logging.getLogger(__name__)

TIE_MARGIN = 1e-3  # top-1 minus top-2 logit below which a multi-token pass's argmax is re-checked alone


@dataclass
class DecodeStats:
    """Work done by an LLM decoding of some utterances (summed with :meth:`add`)."""

    utterances: int = 0
    forward_calls: int = 0  # LLM forward calls (one per batched pass)
    row_passes: int = 0  # LLM forward passes summed over the rows of each call
    output_tokens: int = 0  # LLM output tokens, end-of-turn tokens not counted
    draft_tokens: int = 0  # draft tokens offered, end-of-turn tokens included
    accepted_tokens: int = 0  # draft tokens that became output (verified, or taken by the fast path)
    fast_path: int = 0  # utterances whose draft was taken without the LLM
    close_calls: int = 0  # near-tied positions recomputed as single-token steps
    fed_positions: int = 0  # positions run after the prompts (rows x width of each pass, padding included)

    def add(self, other: "DecodeStats") -> "DecodeStats":
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    @property
    def passes_per_utterance(self) -> float:
        return self.row_passes / max(1, self.utterances)

    @property
    def passes_per_token(self) -> float:
        return self.row_passes / max(1, self.output_tokens)

    @property
    def acceptance(self) -> float:
        """Fraction of the offered draft tokens that were accepted."""
        return self.accepted_tokens / max(1, self.draft_tokens)


class PassCounter:
    """Counts the forward calls of an LLM and the rows each call ran (a forward hook).

        with PassCounter(llm.model) as counter:
            generate_ids(llm, ...)
        counter.calls, counter.rows
    """

    def __init__(self, model: nn.Module) -> None:
        self.module = base_model(model)
        self.calls = 0
        self.rows = 0
        self._handle = None

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict, output) -> None:
        x = kwargs.get("inputs_embeds")
        if x is None:
            x = kwargs.get("input_ids")
        if x is None and args:
            x = args[0]
        self.calls += 1
        self.rows += int(x.shape[0]) if isinstance(x, Tensor) else 1

    def __enter__(self) -> "PassCounter":
        self._handle = self.module.register_forward_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def draft_ids(llm, text: str) -> List[int]:
    """A head's transcript as the LLM's target tokens (``FrozenLLM.target_ids``: case, template
    lead space, end-of-turn token), ending with the stop token."""
    if not text.strip():
        return [llm.stop_id]
    ids = llm.target_ids(text)
    if llm.stop_id in ids:
        return ids[:ids.index(llm.stop_id) + 1]
    return ids + [llm.stop_id]


def head_confidence(logits: Tensor, lens: Tensor) -> List[float]:
    """Per row the smallest max-posterior over its first ``lens`` positions (0 for an empty row).

    logits (B, N, V): CIF-head logits or CTC log-probabilities (softmax of either gives the
    posteriors); lens (B,).
    """
    best = logits.float().softmax(dim=-1).amax(dim=-1).cpu()  # (B, N)
    return [float(best[b, :n].min()) if n > 0 else 0.0 for b, n in enumerate(lens.tolist())]


# ---------------------------------------------------------------------- cache helpers
def _crop(cache, length: int) -> None:
    remove = cache.get_seq_length() - length
    if remove > 0:
        cache.crop(-remove)  # a negative value removes that many positions (every transformers version)


def _should_compact(length: int, longest: int) -> bool:
    """Compact a cache of ``length`` columns whose fullest row has ``longest`` valid ones?"""
    return length > 2 * longest + 16


def _left_packed(mask: Tensor) -> bool:
    """Is every row's valid part one run that ends at the last column (left padding only)?"""
    return bool(mask[:, -1].all()) and bool((mask[:, 1:] >= mask[:, :-1]).all())


def _compact(cache, mask: Tensor) -> Optional[Tensor]:
    """Gathers each row's valid cache columns, left-padded to the longest row; returns the new
    mask (A, C'), or None where the cache's layout is unknown (then nothing changes)."""
    layers = getattr(cache, "layers", None)
    if not layers or not all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers):
        return None
    counts = mask.sum(dim=1)  # (A,)
    width = int(counts.max())
    # a stable sort puts masked columns first and keeps the valid ones in order; keep the last `width`
    order = torch.sort(mask, dim=1, stable=True).indices[:, -width:]  # (A, C')
    for layer in layers:
        if not isinstance(layer.keys, Tensor) or layer.keys.dim() != 4:
            return None
    for layer in layers:
        idx = order[:, None, :, None].to(layer.keys.device)
        layer.keys = layer.keys.gather(2, idx.expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3]))
        layer.values = layer.values.gather(2, idx.expand(-1, layer.values.shape[1], -1, layer.values.shape[3]))
    return mask.gather(1, order)


# ---------------------------------------------------------------------- draft alignment
def align_draft(out: Sequence[int], draft: Sequence[int], guess: int, ngram: int = 3, window: int = 12) -> int:
    """Where the draft continues after the output ``out``: the index after the longest match of
    the output's last tokens (up to ``ngram``) in the draft, the one nearest ``guess`` among
    equally long ones; ``guess`` when nothing matches. A match ``d`` tokens from the guess
    (at most ``window``) counts only if it is at least 1 + d // 3 tokens long, so that a
    frequent token far away does not beat a substitution at the guess."""
    best: Tuple[int, int] = (0, 0)  # (match length, -distance)
    pos = guess
    if not out:
        return guess
    lo, hi = max(1, guess - window), min(len(draft), guess + window)
    for j in range(lo, hi + 1):
        n = 0
        while n < ngram and n < len(out) and j - n - 1 >= 0 and draft[j - n - 1] == out[-n - 1]:
            n += 1
        dist = abs(j - guess)
        if n and n >= 1 + dist // 3 and (n, -dist) > best:
            best, pos = (n, -dist), j
    return pos


@dataclass
class _Row:
    index: int  # row in the caller's batch
    draft: List[int]
    limit: int
    out: List[int]
    pointer: int = 0  # draft index expected to come next
    valid: int = 0  # valid cache positions (= the next position id)
    cap: Optional[int] = None  # most draft tokens to propose next (None: all)
    single: bool = False  # next pass: the anchor alone (re-check of a close call)
    done: bool = False


@torch.no_grad()
def speculative_generate(llm, inputs_embeds: Tensor, attention_mask: Tensor, drafts: Sequence[Sequence[int]],
                         max_new_tokens: Sequence[int], tie_margin: float = TIE_MARGIN,
                         max_proposal: Optional[int] = None, adaptive: Optional[bool] = None, ngram: int = 3,
                         stats: Optional[DecodeStats] = None, repeat_ngram: int = 0) -> List[List[int]]:
    """Greedy decoding verified against drafts; returns per row the token ids without the stop token.

    inputs_embeds (B, L, D) and attention_mask (B, L): left-padded prompts as for
    :func:`xasr.decoding.generate.generate_ids`; drafts: per row LLM token ids (:func:`draft_ids`);
    max_new_tokens: per row bound; max_proposal: at most this many draft tokens per pass
    (None: no limit); stats: counters to add to; repeat_ngram: as for ``generate_ids``, a row
    stops once its output repeats a run of that many tokens and is cut where the repeat starts
    (:mod:`xasr.decoding.loops`), which keeps the output equal to greedy's.

    The first pass scores whole drafts. Later, with ``adaptive``, a row that accepted m of
    the k draft tokens it proposed proposes max(2m + 1, k // 2) next (a good draft grows fast,
    a poor one shrinks to single tokens by halves); without, it proposes all the rest of its
    draft. A pass is as wide as its longest proposal: on a CPU its cost grows with its
    positions, on a GPU width is nearly free. ``adaptive=None``: adaptive on a CPU only.
    """
    model = llm.model
    stop = llm.stop_id
    table = model.get_input_embeddings()
    B, L, _ = inputs_embeds.shape
    dev = inputs_embeds.device
    if B == 0:
        return []
    if not bool(attention_mask[:, -1].all()):
        raise ValueError("speculative decoding needs left-padded prompts (the last column of every row valid)")
    cache_kw = cache_kwarg(model)
    # a sliding window counts cache columns: holes would let a row see fewer of its own tokens
    # than greedy does, so such a cache is kept free of holes (compacted whenever one appears)
    sliding = has_sliding_window(model)
    if adaptive is None:
        adaptive = dev.type == "cpu"
    from transformers import DynamicCache

    rows = [_Row(b, list(drafts[b]), int(max_new_tokens[b]), []) for b in range(B)]
    if stats is not None:
        stats.utterances += B
        stats.draft_tokens += sum(len(r.draft) for r in rows)
    for r in rows:
        r.done = r.limit <= 0  # greedy's first token is then the forced stop
    prompt_lens = attention_mask.sum(dim=1).tolist()
    for r, n in zip(rows, prompt_lens):
        r.valid = int(n) - 1  # the last prompt position is the first pass's anchor
    anchors = inputs_embeds[:, -1].clone()  # (B, D): per row, the input whose prediction comes next
    active = [r for r in rows if not r.done]
    keep = torch.tensor([r.index for r in active], dtype=torch.long, device=dev)
    anchors = anchors[keep]
    cache = DynamicCache()
    mask: Optional[Tensor] = None  # (A, C) over the cache columns
    first = True
    while active:
        # proposals: draft tokens to score after each row's anchor
        proposals = []
        for r in active:
            room = r.limit - len(r.out) - 1  # predictions beyond the bound are not needed
            if r.single or r.pointer >= len(r.draft) or room <= 0:
                proposals.append([])
                continue
            if max_proposal is not None:
                room = min(room, max_proposal)
            if r.cap is not None:
                room = min(room, r.cap)
            proposals.append(r.draft[r.pointer:r.pointer + room])
        A, W = len(active), 1 + max(len(p) for p in proposals)
        ids = torch.full((A, W - 1), llm.pad_id, dtype=torch.long)
        for a, p in enumerate(proposals):
            ids[a, :len(p)] = torch.tensor(p, dtype=torch.long)
        new = torch.cat([anchors[:, None], table(ids.to(dev)).to(anchors.dtype)], dim=1)  # (A, W, D)
        valid = torch.tensor([r.valid for r in active], device=dev)
        pos = valid[:, None] + torch.arange(W, device=dev)[None]  # (A, W)
        if first:  # the prompts (anchor excluded) go in the same pass
            prompt_pos = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)[keep, :-1]
            x = torch.cat([inputs_embeds[keep, :-1], new], dim=1)
            pos = torch.cat([prompt_pos, pos], dim=1)
            full_mask = torch.cat([attention_mask[keep, :-1].long(), torch.ones(A, W, dtype=torch.long, device=dev)], 1)
        else:
            x = new
            full_mask = torch.cat([mask, torch.ones(A, W, dtype=torch.long, device=dev)], dim=1)
        # the pass's own right padding needs no mask: causality hides it from the real positions
        logits = model(inputs_embeds=x, attention_mask=full_mask, position_ids=pos, use_cache=True,
                       logits_to_keep=W, **{cache_kw: cache}).logits.float()  # (A, W, V)
        if stats is not None:
            stats.forward_calls += 1
            stats.row_passes += A
            stats.fed_positions += A * W
        pred = logits.argmax(dim=-1).cpu()  # (A, W)
        start = full_mask.shape[1] - W  # the anchor column
        full_mask[:, start:] = 0
        next_anchor_ids = []
        for a, (r, p) in enumerate(zip(active, proposals)):
            m = 0
            while m < len(p) and int(pred[a, m]) == p[m]:
                m += 1
            take = m + 1  # matched draft tokens and the bonus token
            rechecked, r.single = r.single, False
            if p and not rechecked and tie_margin > 0:  # a pass without proposals is a single step
                top = logits[a, :take].topk(2, dim=-1).values  # (take, 2)
                close = ((top[:, 0] - top[:, 1]) < tie_margin).nonzero()
                if len(close):  # output up to the close call; recompute it alone next pass
                    take, r.single = int(close[0]), True
                    if stats is not None:
                        stats.close_calls += 1
            if adaptive and p and not r.single:
                r.cap = max(2 * m + 1, len(p) // 2)  # grow fast, shrink by halves
            full_mask[a, start:start + take] = 1
            r.valid += take
            if stats is not None:
                stats.accepted_tokens += min(m, take)
            r.pointer = r.pointer + min(m, take) + (1 if take > m else 0)
            for t in pred[a, :take].tolist():
                if len(r.out) >= r.limit or t == stop:
                    r.done = True
                    break
                r.out.append(t)
            if not r.done and len(r.out) >= r.limit:
                r.done = True
            if not r.done and repeat_ngram > 0 and has_repeat(r.out, repeat_ngram):
                r.done = True
            next_anchor_ids.append(int(pred[a, take - 1]) if take > 0 else -1)
            if not r.done and take > m and not r.single:
                r.pointer = align_draft(r.out, r.draft, r.pointer, ngram)
        first = False
        # next anchors: the last output token, or the same input again (close call at the anchor)
        tok = torch.tensor([max(t, 0) for t in next_anchor_ids], dtype=torch.long, device=dev)
        emb = table(tok).to(anchors.dtype)
        same = torch.tensor([t < 0 for t in next_anchor_ids], device=dev)
        anchors = torch.where(same[:, None], anchors, emb)
        # finished rows leave; trailing columns nobody uses go; holes are squeezed out when they dominate
        alive = [a for a, r in enumerate(active) if not r.done]
        if not alive:
            break
        if len(alive) < A:
            sel = torch.tensor(alive, dtype=torch.long, device=dev)
            cache.batch_select_indices(sel)
            full_mask, anchors = full_mask[sel], anchors[sel]
            active = [active[a] for a in alive]
        used = full_mask.any(dim=0).nonzero()
        length = int(used[-1]) + 1 if len(used) else 0
        _crop(cache, length)
        mask = full_mask[:, :length]
        if _should_compact(length, int(mask.sum(dim=1).max())) or (sliding and not _left_packed(mask)):
            compacted = _compact(cache, mask)
            if compacted is not None:
                mask = compacted
            elif sliding:
                raise XasrError("cannot compact this KV cache, which a sliding-window LLM needs; "
                                   "decode with llm_greedy")
    outs = [cut_repeat(r.out, repeat_ngram) for r in rows]
    if stats is not None:
        stats.output_tokens += sum(len(o) for o in outs)
    return outs


def speculative_decode(llm, speech: Sequence[Tensor], drafts: Sequence[Sequence[int]], bounds: Sequence[int],
                       confidences: Optional[Sequence[float]] = None, fast_path_threshold: Optional[float] = None,
                       tie_margin: float = TIE_MARGIN, max_proposal: Optional[int] = None,
                       adaptive: Optional[bool] = None, repeat_ngram: int = 0) -> Tuple[List[List[int]], DecodeStats]:
    """LLM output ids per utterance, from its speech vectors (n_b, D) and its draft.

    With ``fast_path_threshold``, an utterance whose draft confidence (:func:`head_confidence`)
    reaches it takes the draft (without its stop token, cut to its bound; a head that fires
    one token per unit does not run away like the LLM, so ``repeat_ngram`` leaves it alone)
    and skips the LLM; the others are decoded by :func:`speculative_generate`.
    """
    stats = DecodeStats()
    out: List[List[int]] = [[] for _ in speech]
    todo = []
    for b, d in enumerate(drafts):
        if fast_path_threshold is not None and confidences is not None and confidences[b] >= fast_path_threshold:
            out[b] = list(d[:-1] if d and d[-1] == llm.stop_id else d)[:max(0, int(bounds[b]))]
            stats.utterances += 1
            stats.fast_path += 1
            stats.draft_tokens += len(d)
            stats.accepted_tokens += len(out[b])
            stats.output_tokens += len(out[b])
        else:
            todo.append(b)
    if todo:
        emb, mask = llm.generation_inputs([speech[b] for b in todo])
        ids = speculative_generate(llm, emb, mask, [drafts[b] for b in todo], [bounds[b] for b in todo],
                                   tie_margin=tie_margin, max_proposal=max_proposal, adaptive=adaptive,
                                   stats=stats, repeat_ngram=repeat_ngram)
        for b, row in zip(todo, ids):
            out[b] = row
    return out, stats


def greedy_stats(counter: PassCounter, outputs: Sequence[Sequence[int]]) -> DecodeStats:
    """Counters of a plain ``generate_ids`` decoding."""
    return DecodeStats(utterances=len(outputs), forward_calls=counter.calls, row_passes=counter.rows,
                       output_tokens=sum(len(o) for o in outputs), fed_positions=counter.rows)
