"""S-Adapter / I-Adapter: a small MLP from an X2L interface's vectors into the LLM's embedding space.

In: (B, N, input_dim) vectors (C-Former or Q-Former outputs). Out: (B, N, llm_dim).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass
class AdapterConfig:
    input_dim: int = 0  # set from the interface (C-Former / Q-Former) output size
    output_dim: int = 0  # set from the LLM's embedding size
    hidden_dim: int = 1024
    dropout: float = 0.1


class Adapter(nn.Module):
    """Linear -> GELU -> dropout -> Linear, then a learned scale toward the LLM's embedding norm."""

    def __init__(self, cfg: AdapterConfig) -> None:
        super().__init__()
        if cfg.input_dim <= 0 or cfg.output_dim <= 0:
            raise ValueError(f"adapter sizes must be set, got {cfg}")
        self.cfg = cfg
        self.net = nn.Sequential(
            nn.Linear(cfg.input_dim, cfg.hidden_dim), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden_dim, cfg.output_dim),
        )
        self.norm = nn.LayerNorm(cfg.output_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.net(x))  # (B, N, output_dim)


SpeechAdapter = Adapter
ImageAdapter = Adapter
