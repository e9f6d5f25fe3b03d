"""Start the S-Adapter where the frozen LLM already reads text: fit it to the LLM's own embeddings.

Stage 2 trains the S-Adapter through the frozen LLM. On two CPU cores that is a few hundred
updates, too few for a randomly initialised adapter to learn what the LLM should read (the
LLM then reads noise and falls back on its prior). The adapter's job is simple, though: the
stage-1 C-Former fires one vector per unit of the transcript, and the LLM has an input
embedding for the tokens that spell each unit. So, without the LLM's forward pass:

1. the stage-1 model (frozen, in eval mode) runs over the training cuts with the reference unit
   counts (CIF length scaling, as in training), giving one vector per unit;
2. each unit's target is the mean LLM input embedding of the tokens that spell it the way the
   LLM's transcripts do (case, and a word's leading space), as the LLM's embedding layer outputs
   it (Gemma scales its table by the square root of the width);
3. the adapter is fitted to those targets by mean squared error (AdamW, one-cycle schedule);
   the figures (squared error against the targets' variance, and how often the unit whose
   target is nearest to a fitted vector is the right one, on training and validation cuts)
   are returned and logged.

The stage-2 model directory this writes is a normal xasr model directory (it decodes), and
``train.init_from`` starts stage 2 from it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Iterable, Optional, Tuple

import torch
from torch import Tensor

from xasr.data.units import text_pieces

logger = logging.getLogger(__name__)


@dataclass
class AlignStats:
    vectors: int               # training vectors the adapter was fitted on
    valid_vectors: int
    steps: int
    squared_error: float       # mean over training vectors of |adapter(x) - target|^2
    target_variance: float     # mean |target - mean target|^2: what a constant output would score
    train_nearest_unit_accuracy: float
    valid_nearest_unit_accuracy: float
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def unit_targets(units, llm) -> Tensor:
    """(V, D) mean LLM input embedding of the tokens spelling each unit; zero rows for control,
    unknown and ``<...>`` symbol units (they are not fitted)."""
    embedding = llm.model.get_input_embeddings()  # called, not read: some LLMs scale it (Gemma by sqrt(D))
    out = torch.zeros(units.get_piece_size(), embedding.weight.shape[1])
    for i, text in text_pieces(units):
        text = llm.cased(text)
        ids = llm.tokenizer.encode(text, add_special_tokens=False)
        if not ids and text.strip() != text:
            ids = llm.tokenizer.encode(text.strip(), add_special_tokens=False)
        if ids:
            with torch.no_grad():
                out[i] = embedding(torch.tensor(ids)).float().mean(0)
    return out


@torch.no_grad()
def unit_vectors(model, batches: Iterable[dict], table: Optional[Tensor] = None
                 ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """C-Former vectors fired with the reference unit counts, their units, and (given a (V, D)
    ``table``) each vector's head posteriors times the table: (N, dim), (N,), (N, D) or None."""
    model.eval()
    xs, ys, ms = [], [], []
    for batch in batches:
        h, h_lens = model.encode_batch(batch)
        cf = model.cformer(h, h_lens, target_lens=batch.token_lens, alphas=model.cif_alphas(h, h_lens))
        for b in range(cf.vectors.shape[0]):
            n = min(int(batch.token_lens[b]), int(cf.lens[b]))
            xs.append(cf.vectors[b, :n].float())
            ys.append(batch.tokens[b, :n])
            if table is not None:
                ms.append(cf.logits[b, :n].float().softmax(-1) @ table)
    if not xs:
        raise ValueError("no cuts to fit the adapter on")
    return torch.cat(xs), torch.cat(ys), (torch.cat(ms) if table is not None else None)


def nearest_unit_accuracy(out: Tensor, y: Tensor, targets: Tensor) -> float:
    """How often the unit whose target is nearest to each output vector is the right unit."""
    known = targets.abs().sum(1) > 0
    ids = known.nonzero(as_tuple=True)[0]
    hits = 0
    for i in range(0, out.shape[0], 4096):  # bounded memory for large vocabularies
        d = torch.cdist(out[i:i + 4096], targets[known])
        hits += int((ids[d.argmin(1)] == y[i:i + 4096]).sum())
    return hits / max(1, out.shape[0])


def fit_adapter(adapter: torch.nn.Module, x: Tensor, y: Tensor, targets: Tensor,
                valid: Optional[Tuple] = None, steps: int = 2000, lr: float = 2e-3,
                batch_size: int = 256, seed: int = 0, base: Optional[Tensor] = None) -> AlignStats:
    """Fit ``adapter`` so that adapter(x[i]) (+ base[i]) is close to targets[y[i]]; vectors of
    units without a target (zero rows) are left out. ``valid``: (x, y) or (x, y, base).

    ``base`` holds what an adapter with ``posterior_mix`` adds to its MLP (the head's posteriors
    times its unit table, :func:`unit_vectors`): the MLP is then fitted to the remainder and the
    unit table is left as it is. Returns the fit's figures."""
    t0 = time.time()
    mix = base is not None
    mlp = adapter.mlp if mix else adapter
    has = targets[y].abs().sum(1) > 0
    x, y = x[has], y[has]
    if mix:
        base = base[has]
    if x.shape[0] == 0:
        raise ValueError("none of the units has an LLM embedding target")
    tgt = targets[y]
    gen = torch.Generator().manual_seed(seed)
    adapter.train()
    params = [p for n, p in adapter.named_parameters() if n != "unit_table"]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    order, pos = torch.randperm(x.shape[0], generator=gen), 0

    def out_of(xx: Tensor, bb: Optional[Tensor]) -> Tensor:
        return mlp(xx) + bb if mix else mlp(xx)

    for _ in range(steps):
        if pos + batch_size > x.shape[0]:
            order, pos = torch.randperm(x.shape[0], generator=gen), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        loss = ((out_of(x[idx], base[idx] if mix else None) - tgt[idx]) ** 2).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    adapter.eval()
    with torch.no_grad():
        out = out_of(x, base)
        mse = float(((out - tgt) ** 2).sum(1).mean())
        var = float(((tgt - tgt.mean(0)) ** 2).sum(1).mean())
        train_acc = nearest_unit_accuracy(out, y, targets)
        valid_acc, n_valid = float("nan"), 0
        if valid is not None:
            vx, vy = valid[0], valid[1]
            vb = valid[2] if mix else None
            if mix and vb is None:
                raise ValueError("valid needs its base vectors too when base is given")
            keep = targets[vy].abs().sum(1) > 0
            vx, vy = vx[keep], vy[keep]
            n_valid = int(vx.shape[0])
            if n_valid:
                valid_acc = nearest_unit_accuracy(out_of(vx, vb[keep] if mix else None), vy, targets)
    return AlignStats(vectors=int(x.shape[0]), valid_vectors=n_valid, steps=steps, squared_error=mse,
                      target_variance=var, train_nearest_unit_accuracy=train_acc,
                      valid_nearest_unit_accuracy=valid_acc, seconds=round(time.time() - t0, 1))
