"""The frozen LLM's log-probability of whole answers: how likely it is to write each text.

In: a :class:`xasr.models.llm.FrozenLLM`, per utterance its speech vectors (and picture vectors)
in the LLM's embedding size, and per utterance a list of hypothesis texts (an N-best list).
Out: per utterance and hypothesis log P(target ids of the text, end of turn included | the
prompt with that utterance's speech), the score ``llm_rescore`` combines with the CTC search's
(:mod:`xasr.decoding.rescore`). Each utterance's prompt runs once; the hypotheses' tokens form a
prefix tree whose nodes each run once.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

from xasr.models.llm import FrozenLLM, base_model, cache_kwarg, has_sliding_window


@torch.no_grad()
def target_logprobs(llm: FrozenLLM, speech: Sequence[torch.Tensor], texts: Sequence[Sequence[str]],
                    image: Optional[Sequence[Optional[torch.Tensor]]] = None,
                    tree: Optional[bool] = None, max_nodes: Optional[int] = None) -> List[List[float]]:
    """log P(target ids of each text | prompt with the utterance's speech (and picture)),
    end-of-turn token included: how likely the LLM is to write the text as its whole answer.

    speech: per utterance (n_b, D); texts: per utterance its hypotheses; returns the same
    nesting. Per utterance the prompt runs once and its KV cache serves every hypothesis.
    The hypotheses' tokens form a prefix tree (N-best lists share most of their prefixes),
    and each node runs once: in one pass whose attention mask lets a node see the prompt and
    its ancestors (``tree``, the default; ``max_nodes`` nodes per pass, see
    :func:`_tree_logits`), or, for an LLM with sliding-window attention whose window the
    longest hypothesis would pass, one row per hypothesis with the output layer computed once
    per node (``logits_to_keep`` as a boolean mask).
    """
    from transformers import DynamicCache

    cache_kw = cache_kwarg(llm.model)
    window = getattr(base_model(llm.model).config, "sliding_window", None) \
        if has_sliding_window(llm.model) else None
    out: List[List[float]] = []
    for b, hyps in enumerate(texts):
        if not hyps:
            out.append([])
            continue
        emb, mask = llm.generation_inputs([speech[b]], None if image is None else [image[b]])  # (1, P, D)
        cache = DynamicCache()
        first = llm.model(inputs_embeds=emb, attention_mask=mask, use_cache=True, logits_to_keep=1,
                           **{cache_kw: cache}).logits[0, -1].float().log_softmax(-1)  # (V,)
        ids = [llm.target_ids(t) for t in hyps]
        scores = [float(first[i[0]]) for i in ids]
        nodes: Dict[tuple, int] = {}  # token prefix (an input position) -> node
        parent: List[int] = []
        by_node: Dict[int, list] = {}  # node -> (hypothesis, the token the node predicts for it)
        for r, i in enumerate(ids):
            for j in range(len(i) - 1):
                key = tuple(i[:j + 1])
                if key not in nodes:
                    nodes[key] = len(parent)
                    parent.append(nodes[key[:-1]] if j else -1)
                by_node.setdefault(nodes[key], []).append((r, i[j + 1]))
        if nodes:
            P = emb.shape[1]
            use_tree = tree if tree is not None else window is None or P + max(map(len, ids)) <= window
            if use_tree:
                chunks = _tree_logits(llm, cache, cache_kw, P, list(nodes), parent, max_nodes)
            else:
                chunks = [(0, _row_logits(llm, cache, cache_kw, P, nodes, ids))]
            for start, logits in chunks:  # (C, V): the nodes start, start + 1, ...
                norm = logits.logsumexp(dim=-1)
                for c in range(logits.shape[0]):
                    for r, t in by_node.get(start + c, ()):
                        scores[r] += float(logits[c, t] - norm[c])
        out.append(scores)
    return out

def _tree_logits(llm: FrozenLLM, cache, cache_kw: str, P: int, keys: List[tuple], parent: List[int],
                 max_nodes: Optional[int] = None):
    """Yields (first node, logits (C, V)) for the prefix-tree nodes ``keys`` after the cached
    prompt of P positions, ``max_nodes`` nodes per pass (default: as many as keep the logits
    near 256 MB): node k sits at position P + depth and attends to the prompt, its ancestors
    and itself; each pass's nodes join the cache, so later passes see their ancestors."""
    U = len(keys)
    table = llm.model.get_input_embeddings()
    dev, dtype = table.weight.device, table.weight.dtype
    step = max_nodes or max(16, (1 << 26) // table.weight.shape[0])
    see = torch.zeros((U, P + U), dtype=torch.bool)
    see[:, :P] = True
    for k, a in enumerate(parent):  # parents come before their children
        if a >= 0:
            see[k, P:] = see[a, P:]
        see[k, P + k] = True
    tok = torch.tensor([k[-1] for k in keys], dtype=torch.long, device=dev)
    pos = torch.tensor([P + len(k) - 1 for k in keys], dtype=torch.long, device=dev)
    for s in range(0, U, step):
        e = min(U, s + step)
        mask = torch.zeros((1, 1, e - s, P + e), dtype=dtype).masked_fill(~see[s:e, :P + e], torch.finfo(dtype).min)
        yield s, llm.model(inputs_embeds=table(tok[s:e])[None], attention_mask=mask.to(dev),
                            position_ids=pos[None, s:e], use_cache=True, **{cache_kw: cache}).logits[0].float()

def _row_logits(llm: FrozenLLM, cache, cache_kw: str, P: int, node: Dict[tuple, int], ids) -> torch.Tensor:
    """The logits (U, V) of :func:`_tree_logits` (``node``: token prefix -> node) with one row
    per hypothesis (right-padded, the prompt's cache repeated), an ordinary padding mask, and
    the output layer kept at the first row and position of each node."""
    rows, width = len(ids), max(map(len, ids)) - 1
    dev = llm.model.get_input_embeddings().weight.device
    tok = torch.full((rows, width), llm.pad_id, dtype=torch.long)
    tmask = torch.zeros((rows, width), dtype=torch.long)
    keep = torch.zeros((rows, width), dtype=torch.bool)
    at = {}  # node -> (row, position) that computes it
    for r, i in enumerate(ids):
        tok[r, :len(i) - 1] = torch.tensor(i[:-1])
        tmask[r, :len(i) - 1] = 1
        for j in range(len(i) - 1):
            n = node[tuple(i[:j + 1])]
            if n not in at:
                at[n] = (r, j)
                keep[r, j] = True
    order = sorted(at, key=lambda n: at[n])  # keep's row-major order
    cache.batch_select_indices(torch.zeros(rows, dtype=torch.long, device=dev))
    logits = llm.model(
        inputs_embeds=llm.model.get_input_embeddings()(tok.to(dev)),
        attention_mask=torch.cat([torch.ones((rows, P), dtype=torch.long), tmask], dim=1).to(dev),
        position_ids=torch.arange(P, P + width, device=dev).expand(rows, -1),
        use_cache=True, logits_to_keep=keep.to(dev), **{cache_kw: cache}).logits.float()  # (U, V)
    out = torch.empty_like(logits)
    out[torch.tensor(order)] = logits
    return out
