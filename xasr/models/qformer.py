"""Q-Former (X-LLM's image X2L interface): image features -> a fixed number of query vectors.

In: image encoder features ``x`` (B, N, input_dim) with lengths ``x_lens`` (B,) (positions
beyond a row's length are padding and never attended to) and optionally each row's feature
grid (h, w), row-major, with h * w == its length.
Out: (B, num_queries, dim), the vectors the I-Adapter (:class:`xasr.models.adapter.Adapter`)
maps into the LLM's embedding space.

Pipeline: linear projection of the features to ``dim`` (+ 2-D sine/cosine positions of the grid
cells, so that the queries can tell left from right and top from bottom: cross-attention alone
ignores where a feature sits) -> LayerNorm = the memory. ``num_queries`` learned query vectors
go through ``num_layers`` pre-norm layers, each: self-attention over the queries,
cross-attention to the memory (with the key padding mask), feed-forward -> final LayerNorm.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xasr.models.cformer import sinusoidal_positions
from xasr.models.cif import lengths_to_mask


@dataclass
class QFormerConfig:
    input_dim: int = 0  # image feature size (set from the image encoder)
    dim: int = 256
    num_queries: int = 16
    num_layers: int = 2
    num_heads: int = 4
    ff_dim: int = 1024
    dropout: float = 0.1
    grid_positions: bool = True  # add 2-D positions of the feature grid to the projected features


class Attention(nn.Module):
    """Multi-head attention of queries (B, Q, D) over keys/values (B, N, D) with a key mask."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: Tensor, memory: Tensor, key_mask: Optional[Tensor] = None) -> Tensor:
        """x (B, Q, D), memory (B, N, D), key_mask (B, N) True where attending is allowed."""
        B, Q, D = x.shape
        N, H = memory.shape[1], self.num_heads
        q = self.q(x).view(B, Q, H, D // H).transpose(1, 2)  # (B, H, Q, Dh)
        k, v = self.kv(memory).view(B, N, 2, H, D // H).permute(2, 0, 3, 1, 4)  # (B, H, N, Dh) each
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, N)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, H, Q, Dh)
        return self.out(y.transpose(1, 2).reshape(B, Q, D))


class QFormerLayer(nn.Module):
    """Pre-norm: q + SelfAttn(LN(q)), q + CrossAttn(LN(q), memory), q + FF(LN(q))."""

    def __init__(self, dim: int, num_heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, num_heads, dropout)
        self.cross_norm = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, num_heads, dropout)
        self.ff = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, ff_dim), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(ff_dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, q: Tensor, memory: Tensor, key_mask: Tensor) -> Tensor:
        h = self.self_norm(q)
        q = q + self.dropout(self.self_attn(h, h))  # (B, Q, D)
        q = q + self.dropout(self.cross_attn(self.cross_norm(q), memory, key_mask))
        return q + self.dropout(self.ff(q))


def grid_positions(h: int, w: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(h*w, dim) positions of a row-major grid: row table in the first half, column table in the other."""
    dr = dim // 2
    rows = sinusoidal_positions(h, dr, device, dtype)  # (h, dr)
    cols = sinusoidal_positions(w, dim - dr, device, dtype)  # (w, dim - dr)
    return torch.cat([rows[:, None, :].expand(h, w, dr), cols[None, :, :].expand(h, w, dim - dr)],
                     dim=-1).reshape(h * w, dim)


class QFormer(nn.Module):
    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        if cfg.input_dim <= 0 or cfg.num_queries <= 0:
            raise ValueError(f"QFormerConfig.input_dim ({cfg.input_dim}) and num_queries ({cfg.num_queries}) "
                             "must be set (> 0)")
        self.cfg = cfg
        self.input_proj = nn.Linear(cfg.input_dim, cfg.dim)
        self.memory_norm = nn.LayerNorm(cfg.dim)
        self.input_dropout = nn.Dropout(cfg.dropout)
        self.queries = nn.Parameter(torch.randn(cfg.num_queries, cfg.dim) * cfg.dim ** -0.5)
        self.layers = nn.ModuleList(QFormerLayer(cfg.dim, cfg.num_heads, cfg.ff_dim, cfg.dropout)
                                    for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(cfg.dim)

    @property
    def output_dim(self) -> int:
        return self.cfg.dim

    @property
    def num_queries(self) -> int:
        return self.cfg.num_queries

    def forward(self, x: Tensor, x_lens: Tensor, grids: Optional[Sequence[Tuple[int, int]]] = None) -> Tensor:
        B, N, _ = x.shape
        m = self.input_proj(x)  # (B, N, dim)
        if self.cfg.grid_positions and grids is not None:
            pos = m.new_zeros(B, N, self.cfg.dim)
            for b, (h, w) in enumerate(grids):
                if h * w > N:
                    raise ValueError(f"row {b}: a {h} x {w} grid does not fit {N} feature positions")
                pos[b, :h * w] = grid_positions(h, w, self.cfg.dim, m.device, m.dtype)
            m = m + pos
        memory = self.input_dropout(self.memory_norm(m))  # (B, N, dim)
        key_mask = lengths_to_mask(x_lens.to(x.device), N)  # (B, N)
        key_mask = key_mask | (x_lens.to(x.device) == 0)[:, None]  # no features: attend to all rather than NaN
        q = self.queries[None].expand(B, -1, -1)  # (B, Q, dim)
        for layer in self.layers:
            q = layer(q, memory, key_mask)
        return self.norm(q)  # (B, Q, dim)
