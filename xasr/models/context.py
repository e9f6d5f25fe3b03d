"""Contextual acoustic head: trainable layers between the speech encoder and the CTC / CIF heads.

In: encoder output ``h`` (B, T, input_dim) with lengths (B,), e.g. the frozen Whisper encoder's
50 Hz frames. Out: ``(y, y_lens)``, ``y`` (B, ceil(T / stride), dim) with lengths (B,): the
sequence the CTC head and the C-Former read instead of the raw encoder output.

Several encoder layers (an encoder that gives ``groups`` layers' outputs side by side, e.g. Whisper
with ``output_layers``): with ``layer_mix: concat`` the projection below reads them all; with
``layer_mix: weighted`` they are first summed with learned softmax weights (zero-initialised: the
mean), as the SUPERB benchmark's downstream models weigh a frozen model's layers.

Pipeline: ``stride`` consecutive frames are stacked (frame-rate subsampling: 50 Hz -> 25 Hz with
stride 2; the last group is zero-padded) -> linear projection to ``dim`` -> dropout -> sinusoidal
positions -> ``num_layers`` pre-norm transformer layers with a padding mask -> LayerNorm.

A frozen pretrained encoder read by a single linear CTC layer is a linear probe; the downstream
models of frozen-feature ASR put a few trainable context layers on top instead (the SUPERB
benchmark's ASR task uses a 2-layer BiLSTM on frozen features, Yang et al. 2021, arXiv
2105.01051). With ``enabled: false`` the head is absent and the heads read the encoder output,
as models trained before it do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xasr.models.cformer import TransformerLayer, sinusoidal_positions
from xasr.models.cif import lengths_to_mask


@dataclass
class ContextConfig:
    enabled: bool = False
    input_dim: int = 0  # the encoder's output size (set from the encoder)
    groups: int = 1  # encoder layers side by side in that output (set from the encoder)
    layer_mix: str = "concat"  # several layers: "concat" (the projection reads all) or "weighted" (a learned sum)
    stride: int = 2  # frames stacked into one output frame
    dim: int = 256
    num_layers: int = 2
    num_heads: int = 4
    ff_dim: int = 1024
    dropout: float = 0.1


class ContextualHead(nn.Module):
    def __init__(self, cfg: ContextConfig) -> None:
        super().__init__()
        if cfg.input_dim <= 0:
            raise ValueError(f"ContextConfig.input_dim must be set (> 0), got {cfg.input_dim}")
        if cfg.stride < 1:
            raise ValueError(f"ContextConfig.stride must be >= 1, got {cfg.stride}")
        if cfg.layer_mix not in ("concat", "weighted"):
            raise ValueError(f"ContextConfig.layer_mix must be concat or weighted, not {cfg.layer_mix!r}")
        if cfg.groups < 1 or cfg.input_dim % cfg.groups:
            raise ValueError(f"ContextConfig.groups={cfg.groups} does not divide input_dim={cfg.input_dim}")
        self.cfg = cfg
        self.layer_weights = None
        in_dim = cfg.input_dim
        if cfg.layer_mix == "weighted" and cfg.groups > 1:
            self.layer_weights = nn.Parameter(torch.zeros(cfg.groups))
            in_dim = cfg.input_dim // cfg.groups
        self.proj = nn.Linear(cfg.stride * in_dim, cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(TransformerLayer(cfg.dim, cfg.num_heads, cfg.ff_dim, cfg.dropout)
                                    for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(cfg.dim)

    @property
    def output_dim(self) -> int:
        return self.cfg.dim

    def output_lengths(self, lens: Tensor) -> Tensor:
        s = self.cfg.stride
        return torch.div(lens + s - 1, s, rounding_mode="floor")

    def forward(self, h: Tensor, h_lens: Tensor) -> Tuple[Tensor, Tensor]:
        """h (B, T, input_dim), h_lens (B,) -> (B, ceil(T / stride), dim), (B,)."""
        B, T, D = h.shape
        if self.layer_weights is not None:  # (B, T, G * D') -> (B, T, D'), a learned mix of the layers
            G = self.layer_weights.numel()
            w = torch.softmax(self.layer_weights, dim=0).to(h.dtype)
            h = (h.view(B, T, G, D // G) * w[:, None]).sum(dim=2)
            D = D // G
        s = self.cfg.stride
        valid_in = lengths_to_mask(h_lens, T)  # (B, T)
        h = h.masked_fill(~valid_in[:, :, None], 0.0)  # padding frames never leak into a group
        pad = (-T) % s
        if pad:
            h = F.pad(h, (0, 0, 0, pad))
        n = (T + pad) // s
        x = self.dropout(self.proj(h.reshape(B, n, s * D)))  # (B, N, dim)
        lens = self.output_lengths(h_lens)  # (B,)
        if n == 0:
            return self.norm(x), lens
        x = x + sinusoidal_positions(n, x.size(2), x.device, x.dtype)[None]
        valid = lengths_to_mask(lens, n)  # (B, N)
        key_mask = valid | (lens == 0)[:, None]  # an empty row attends to all rather than NaN
        for layer in self.layers:
            x = layer(x, key_mask)
        return self.norm(x).masked_fill(~valid[:, :, None], 0.0), lens  # (B, N, dim), (B,)
