"""C-Former (X-LLM's speech X2L interface): encoder frames -> one vector per output unit.

In: speech encoder output ``h`` (B, T, input_dim) with lengths (B,); during training the
number of target units per utterance (B,).
Out: :class:`CFormerOutput`: ``vectors`` (B, N, dim), one per unit (these go to the
S-Adapter and the LLM), their counts ``lens`` (B,), the stage-1 head's unit ``logits``
(B, N, V), the CIF weights ``alphas`` (B, T) and the CIF quantity loss (with targets).

Pipeline: linear projection of the encoder output to ``dim`` -> CIF (:mod:`xasr.models.cif`)
compresses the frames to one vector per unit (exactly N with targets; counted by the alphas at
inference) -> sinusoidal positions (the fired vectors are a sequence; self-attention alone
would ignore their order) -> pre-norm transformer layers (self-attention with a padding mask;
with ``cross_attention``, attention to the projected encoder frames, as in Paraformer's
decoder, Gao et al. 2022; feed-forward) -> final LayerNorm = ``vectors``. The stage-1 head is a linear
layer to the sentencepiece units, trained with cross-entropy against the unit targets, one
fired vector per unit (:meth:`CFormer.ce_loss`); its argmax per vector is the "CIF head"
decoding (:meth:`CFormer.greedy_units`).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xasr.models.cif import CifCompressor, CifConfig, lengths_to_mask
from xasr.models.ctc import ClassTiedLinear

logger = logging.getLogger(__name__)


@dataclass
class CFormerConfig:
    input_dim: int = 0  # speech encoder output size (set from the encoder)
    vocab_size: int = 0  # sentencepiece units of the stage-1 head (set from the units)
    dim: int = 256
    num_layers: int = 2
    num_heads: int = 4
    ff_dim: int = 1024
    dropout: float = 0.1
    label_smoothing: float = 0.0  # of the stage-1 cross-entropy
    # each layer also attends to the (projected) encoder frames, so a fired vector can take what
    # it lacks from the frames around its CIF boundary (CIF alone is only as exact as its alphas)
    cross_attention: bool = False
    cif: CifConfig = field(default_factory=CifConfig)  # cif.input_dim: None or dim


@dataclass
class CFormerOutput:
    vectors: Tensor  # (B, N, dim), zero beyond lens
    lens: Tensor  # (B,)
    logits: Tensor  # (B, N, V)
    alphas: Tensor  # (B, T)
    quantity_loss: Optional[Tensor]  # scalar, with target lengths only


def sinusoidal_positions(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(length, dim) sine/cosine position table (Vaswani et al. 2017)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(pos * inv_freq)
    table[:, 1::2] = torch.cos(pos * inv_freq[: dim // 2])
    return table.to(dtype)


class TransformerLayer(nn.Module):
    """Pre-norm transformer encoder layer: x + MHSA(LN(x)), x + FF(LN(x))."""

    def __init__(self, dim: int, num_heads: int, ff_dim: int, dropout: float, cross_attention: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.attn_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_out = nn.Linear(dim, dim)
        self.attn_dropout = dropout
        self.ff = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, ff_dim), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(ff_dim, dim))
        self.dropout = nn.Dropout(dropout)
        self.cross = cross_attention
        if cross_attention:
            self.cross_norm = nn.LayerNorm(dim)
            self.cross_q = nn.Linear(dim, dim)
            self.cross_kv = nn.Linear(dim, 2 * dim)
            self.cross_out = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> Tensor:  # (B, L, D) -> (B, H, L, Dh)
        B, L, D = x.shape
        return x.view(B, L, self.num_heads, D // self.num_heads).transpose(1, 2)

    def forward(self, x: Tensor, key_mask: Tensor, memory: Optional[Tensor] = None,
                memory_mask: Optional[Tensor] = None) -> Tensor:
        """x (B, N, D), key_mask (B, N) True on positions that may be attended to; with cross
        attention also memory (B, T, D) and memory_mask (B, T)."""
        B, N, D = x.shape
        drop = self.attn_dropout if self.training else 0.0
        qkv = self.qkv(self.attn_norm(x)).view(B, N, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, H, N, Dh) each
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :], dropout_p=drop)
        x = x + self.dropout(self.attn_out(y.transpose(1, 2).reshape(B, N, D)))  # (B, N, D)
        if self.cross:
            if memory is None or memory_mask is None:
                raise ValueError("this layer has cross attention: pass memory and memory_mask")
            q = self._heads(self.cross_q(self.cross_norm(x)))  # (B, H, N, Dh)
            k, v = (self._heads(t) for t in self.cross_kv(memory).chunk(2, dim=-1))  # (B, H, T, Dh)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=memory_mask[:, None, None, :], dropout_p=drop)
            x = x + self.dropout(self.cross_out(y.transpose(1, 2).reshape(B, N, D)))
        return x + self.dropout(self.ff(x))


class CFormer(nn.Module):
    """``classes``: a homophone class id per unit, which the unit head then ties
    (:class:`xasr.models.ctc.ClassTiedLinear`)."""

    def __init__(self, cfg: CFormerConfig, classes: Optional[List[int]] = None) -> None:
        super().__init__()
        if cfg.input_dim <= 0 or cfg.vocab_size <= 0:
            raise ValueError(f"CFormerConfig.input_dim ({cfg.input_dim}) and vocab_size ({cfg.vocab_size}) "
                             "must be set (> 0)")
        if cfg.cif.input_dim not in (None, cfg.dim):
            raise ValueError(f"cif.input_dim ({cfg.cif.input_dim}) must be unset or equal to dim ({cfg.dim}): "
                             "the CIF runs on the projected encoder output")
        self.cfg = cfg
        self.input_proj = nn.Linear(cfg.input_dim, cfg.dim)
        self.input_dropout = nn.Dropout(cfg.dropout)
        self.cif = CifCompressor(replace(cfg.cif, input_dim=cfg.dim))
        self.layers = nn.ModuleList(TransformerLayer(cfg.dim, cfg.num_heads, cfg.ff_dim, cfg.dropout,
                                                     cross_attention=cfg.cross_attention)
                                    for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = ClassTiedLinear(cfg.dim, cfg.vocab_size, classes)

    @property
    def output_dim(self) -> int:
        return self.cfg.dim

    def forward(self, h: Tensor, h_lens: Tensor, target_lens: Optional[Tensor] = None,
                alphas: Optional[Tensor] = None) -> CFormerOutput:
        """h (B, T, input_dim), h_lens (B,); target_lens (B,) in training; alphas (B, T) to
        fire on given weights instead of the CIF predictor's (see ModelConfig.cif_alphas)."""
        x = self.input_dropout(self.input_proj(h))  # (B, T, dim)
        cif = self.cif(x, h_lens, target_lens, alphas=alphas)
        v, lens = cif.fired, cif.fired_lens  # (B, N, dim), (B,)
        valid = lengths_to_mask(lens, v.size(1))  # (B, N)
        if v.size(1) > 0:
            v = v + sinusoidal_positions(v.size(1), v.size(2), v.device, v.dtype)[None]
            key_mask = valid | (lens == 0)[:, None]  # nothing fired: attend to all rather than NaN
            frames = lengths_to_mask(h_lens, x.size(1))
            frames = frames | (h_lens == 0)[:, None]
            for layer in self.layers:
                v = layer(v, key_mask, x, frames)
        v = self.norm(v).masked_fill(~valid[:, :, None], 0.0)  # (B, N, dim)
        logits = self.head(v)  # (B, N, V)
        return CFormerOutput(v, lens, logits, cif.alphas, cif.quantity_loss)

    def ce_loss(self, logits: Tensor, lens: Tensor, targets: Tensor, target_lens: Tensor) -> Tensor:
        """Cross-entropy of the stage-1 head, mean over the valid units of the batch.

        logits (B, N, V) from a forward pass given ``target_lens``, so that ``lens`` equals
        ``target_lens``; targets (B, S) padded unit ids (any padding value), S >= N.
        """
        if not torch.equal(lens.cpu(), target_lens.cpu()):
            raise ValueError("ce_loss needs one fired vector per target unit: run forward with target_lens "
                             f"(fired {lens.tolist()}, targets {target_lens.tolist()})")
        n = logits.size(1)
        valid = lengths_to_mask(target_lens.to(logits.device), n)  # (B, N)
        if not bool(valid.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits[valid].float(), targets[:, :n][valid].long(),
                               label_smoothing=self.cfg.label_smoothing)

    @staticmethod
    def greedy_units(logits: Tensor, lens: Tensor) -> List[List[int]]:
        """Argmax unit of each fired vector (the CIF-head decoding): (B, N, V), (B,) -> ids."""
        best = logits.argmax(dim=-1).cpu()  # (B, N)
        return [best[b, :n].tolist() for b, n in enumerate(lens.tolist())]
