"""S-Adapter / I-Adapter: a small MLP from an X2L interface's vectors into the LLM's embedding space.

In: (B, N, input_dim) vectors (C-Former or Q-Former outputs). Out: (B, N, llm_dim).

With ``posterior_mix`` (S-Adapter only) the output also holds the C-Former head's belief about
each vector's unit, in words the LLM reads: ``posteriors (B, N, V) @ unit_table (V, llm_dim)``,
the table starting from the LLM's own embeddings of the units (``xasr align-adapter``) and
trained in stage 2; the MLP then adds what the posteriors miss. The LLM thus starts from an
input that is at least as informative as the head's choice, and can weigh homophones and near
misses by context (the idea of feeding an LLM posterior-weighted embeddings, e.g. LegoSLM,
arXiv 2505.11352).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn


@dataclass
class AdapterConfig:
    input_dim: int = 0  # set from the interface (C-Former / Q-Former) output size
    output_dim: int = 0  # set from the LLM's embedding size
    hidden_dim: int = 1024
    dropout: float = 0.1
    posterior_mix: bool = False  # add the head's unit posteriors times a learned unit table (S-Adapter)
    vocab_size: int = 0  # set from the units when posterior_mix is on


class Adapter(nn.Module):
    """Linear -> GELU -> dropout -> Linear, then a learned scale toward the LLM's embedding norm
    (plus, with ``posterior_mix``, the posterior-weighted unit table)."""

    def __init__(self, cfg: AdapterConfig) -> None:
        super().__init__()
        if cfg.input_dim <= 0 or cfg.output_dim <= 0:
            raise ValueError(f"adapter sizes must be set, got {cfg}")
        if cfg.posterior_mix and cfg.vocab_size <= 0:
            raise ValueError(f"posterior_mix needs the unit vocabulary size, got {cfg}")
        self.cfg = cfg
        self.net = nn.Sequential(
            nn.Linear(cfg.input_dim, cfg.hidden_dim), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden_dim, cfg.output_dim),
        )
        self.norm = nn.LayerNorm(cfg.output_dim)
        self.unit_table: Optional[nn.Parameter] = (
            nn.Parameter(torch.zeros(cfg.vocab_size, cfg.output_dim)) if cfg.posterior_mix else None)

    def mlp(self, x: Tensor) -> Tensor:
        """The MLP path alone: (B, N, input_dim) -> (B, N, output_dim)."""
        return self.norm(self.net(x))

    def mix(self, posteriors: Tensor) -> Tensor:
        """The unit-table path alone: (B, N, V) posteriors -> (B, N, output_dim)."""
        if self.unit_table is None:
            raise ValueError("this adapter has no unit table (posterior_mix is off)")
        return posteriors.to(self.unit_table.dtype) @ self.unit_table

    def forward(self, x: Tensor, posteriors: Optional[Tensor] = None) -> Tensor:
        if self.unit_table is None:
            return self.mlp(x)  # (B, N, output_dim)
        if posteriors is None:
            raise ValueError("this adapter mixes its unit table by the head's posteriors: pass them")
        return self.mlp(x) + self.mix(posteriors)


SpeechAdapter = Adapter
ImageAdapter = Adapter
