"""Conformer speech encoder: fbank frames -> subsampled encodings, trained from scratch.

In: ``feats`` (B, T, F) log-mel fbank (F = 80, 10 ms frames) and their lengths (B,).
Out: ``h`` (B, T', D) and ``h_lens`` (B,), with T' about T / subsampling (4: 40 ms frames);
positions beyond ``h_lens`` are zero.

Architecture (Gulati et al., "Conformer", Interspeech 2020), written here from the paper:
  - front-end: Conv2d subsampling over (time, frequency), ReLU after each conv, then a linear
    projection of (channels x remaining frequency bins) to D. Factor 4: two 3x3 stride-2 convs;
    6: a 3x3 stride-2 then a 5x5 stride-3 conv; 8: three 3x3 stride-2 convs. No padding in
    time, so output frame j sees only input frames inside its window and
    ``T' = (T - k) // s + 1`` per conv (:meth:`ConformerEncoder.output_lengths`);
  - blocks: ``x + FF/2``, ``x + MHSA``, ``x + Conv``, ``x + FF/2``, LayerNorm (macaron
    feed-forward halves, pre-norm residual modules, SiLU activations);
  - self-attention positions: rotary embeddings (RoPE, Su et al. 2021) on queries and keys.
    They make the attention scores depend on relative offsets only, need no maximum length
    and no extra parameters, and keep the attention a plain ``scaled_dot_product_attention``
    call; padded keys are masked out;
  - convolution module: LayerNorm, pointwise conv to 2D + GLU, depthwise conv (odd kernel,
    'same' padding), LayerNorm (instead of the paper's BatchNorm, so statistics never mix
    padding into valid frames, in training as in evaluation), SiLU, pointwise conv. Padded
    frames are zeroed before the depthwise conv, so valid outputs do not depend on padding.
SpecAugment (Park et al. 2019; frequency and time masks, no time warping) is applied to the
input features in training mode only, when enabled; masked values are set to the utterance's
mean feature value.

Registered as ``"conformer"`` in :data:`xasr.models.encoder_registry.ENCODERS`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xasr.errors import XasrError
from xasr.models.encoder_registry import ENCODERS

logger = logging.getLogger(__name__)

# (kernel, stride) of each Conv2d of the front-end, per subsampling factor.
SUBSAMPLING_LAYERS: Dict[int, Tuple[Tuple[int, int], ...]] = {
    4: ((3, 2), (3, 2)),
    6: ((3, 2), (5, 3)),
    8: ((3, 2), (3, 2), (3, 2)),
}


@dataclass
class ConformerConfig:
    input_dim: int = 80
    dim: int = 256
    num_layers: int = 6
    num_heads: int = 4
    ff_dim: int = 1024
    conv_kernel: int = 15  # depthwise conv of the convolution module; odd
    dropout: float = 0.1
    subsampling: int = 4  # 4, 6 or 8 (40, 60, 80 ms frames from 10 ms fbank)
    subsampling_channels: Optional[int] = None  # Conv2d channels of the front-end; None: dim
    rotary_base: float = 10000.0
    spec_augment: bool = True  # training mode only
    num_freq_masks: int = 2
    freq_mask_width: int = 27  # max bins per frequency mask
    num_time_masks: int = 2
    time_mask_width: int = 40  # max frames per time mask ...
    time_mask_ratio: float = 0.1  # ... and at most this fraction of the utterance


def lengths_to_mask(lens: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, max_len) bool mask, True on valid positions."""
    return torch.arange(max_len, device=lens.device)[None, :] < lens[:, None]


def spec_augment(feats: Tensor, feat_lens: Tensor, cfg: ConformerConfig) -> Tensor:
    """Frequency and time masking of (B, T, F) features, each utterance drawn independently."""
    B, T, n_bins = feats.shape
    valid = lengths_to_mask(feat_lens, T)  # (B, T)
    fill = (feats * valid[:, :, None]).sum(dim=(1, 2)) / (feat_lens.clamp(min=1) * n_bins)  # (B,)
    masked = torch.zeros(B, T, n_bins, dtype=torch.bool, device=feats.device)
    bins = torch.arange(n_bins, device=feats.device)[None, :]  # (1, F)
    for _ in range(cfg.num_freq_masks):
        width = torch.randint(0, cfg.freq_mask_width + 1, (B, 1), device=feats.device)
        start = (torch.rand(B, 1, device=feats.device) * (n_bins - width + 1)).long()
        masked |= ((bins >= start) & (bins < start + width))[:, None, :]
    frames = torch.arange(T, device=feats.device)[None, :]  # (1, T)
    max_width = torch.clamp((feat_lens.float() * cfg.time_mask_ratio).long(), max=cfg.time_mask_width)
    for _ in range(cfg.num_time_masks):
        width = (torch.rand(B, device=feats.device) * (max_width + 1).float()).long()[:, None]  # (B, 1)
        start = (torch.rand(B, 1, device=feats.device) * (feat_lens[:, None] - width + 1).float()).long()
        masked |= ((frames >= start) & (frames < start + width))[:, :, None]
    return torch.where(masked, fill[:, None, None].to(feats.dtype), feats)


class Conv2dSubsampling(nn.Module):
    """(B, T, F) -> (B, T', D): Conv2d + ReLU layers over (time, frequency), then a linear."""

    def __init__(self, input_dim: int, dim: int, factor: int, channels: int) -> None:
        super().__init__()
        if factor not in SUBSAMPLING_LAYERS:
            raise ValueError(f"subsampling must be one of {sorted(SUBSAMPLING_LAYERS)}, not {factor}")
        self.layers = SUBSAMPLING_LAYERS[factor]
        convs = []
        in_ch, freq = 1, input_dim
        for kernel, stride in self.layers:
            convs += [nn.Conv2d(in_ch, channels, kernel, stride), nn.ReLU()]
            in_ch, freq = channels, (freq - kernel) // stride + 1
        if freq < 1:
            raise ValueError(f"input_dim {input_dim} is too small for subsampling {factor}")
        self.convs = nn.Sequential(*convs)
        self.out = nn.Linear(channels * freq, dim)
        self.min_frames = self.min_input_length()

    def output_lengths(self, lens: Tensor) -> Tensor:
        for kernel, stride in self.layers:
            lens = torch.div(lens - kernel, stride, rounding_mode="floor") + 1
        return lens.clamp(min=0)

    def min_input_length(self) -> int:
        n = 1
        for kernel, stride in reversed(self.layers):
            n = (n - 1) * stride + kernel
        return n

    def forward(self, feats: Tensor) -> Tensor:
        if feats.size(1) < self.min_frames:
            raise ValueError(f"the longest input has {feats.size(1)} frames; the subsampling front-end "
                             f"needs at least {self.min_frames}")
        x = self.convs(feats.unsqueeze(1))  # (B, C, T', F')
        b, c, t, f = x.shape
        return self.out(x.permute(0, 2, 1, 3).reshape(b, t, c * f))  # (B, T', D)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for rotary position embeddings of a given head size."""

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head size, not {head_dim}")
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, length: int, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
        pos = torch.arange(length, device=self.inv_freq.device, dtype=torch.float32)
        angles = torch.outer(pos, self.inv_freq)  # (T, Dh/2)
        angles = torch.cat([angles, angles], dim=-1)  # (T, Dh)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, H, T, Dh) by position: pairs (i, i + Dh/2) turn by angle pos * freq_i."""
    half = x.size(-1) // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class RotarySelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: Tensor, key_mask: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """x (B, T, D), key_mask (B, T) True on keys that may be attended to."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)  # (B, H, T, Dh)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :],
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, T, D))  # (B, T, D)


class FeedForward(nn.Module):
    def __init__(self, dim: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, ff_dim), nn.SiLU(), nn.Dropout(dropout),
                                 nn.Linear(ff_dim, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvModule(nn.Module):
    def __init__(self, dim: int, kernel: int, dropout: float) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"conv_kernel must be odd, not {kernel}")
        self.norm = nn.LayerNorm(dim)
        self.pointwise_in = nn.Linear(dim, 2 * dim)
        self.depthwise = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.depthwise_norm = nn.LayerNorm(dim)
        self.pointwise_out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """x (B, T, D), valid (B, T)."""
        y = F.glu(self.pointwise_in(self.norm(x)), dim=-1)  # (B, T, D)
        y = y.masked_fill(~valid[:, :, None], 0.0)
        y = self.depthwise(y.transpose(1, 2)).transpose(1, 2)  # (B, T, D)
        y = F.silu(self.depthwise_norm(y))
        return self.dropout(self.pointwise_out(y))


class ConformerBlock(nn.Module):
    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        self.ff1 = FeedForward(cfg.dim, cfg.ff_dim, cfg.dropout)
        self.attn_norm = nn.LayerNorm(cfg.dim)
        self.attn = RotarySelfAttention(cfg.dim, cfg.num_heads, cfg.dropout)
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.conv = ConvModule(cfg.dim, cfg.conv_kernel, cfg.dropout)
        self.ff2 = FeedForward(cfg.dim, cfg.ff_dim, cfg.dropout)
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, x: Tensor, valid: Tensor, key_mask: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + 0.5 * self.ff1(x)  # (B, T, D)
        x = x + self.attn_dropout(self.attn(self.attn_norm(x), key_mask, cos, sin))
        x = x + self.conv(x, valid)
        x = x + 0.5 * self.ff2(x)
        return self.norm(x)


@ENCODERS.register("conformer")
class ConformerEncoder(nn.Module):
    """Conformer encoder; ``forward(feats (B, T, F), feat_lens (B,)) -> (h (B, T', D), h_lens (B,))``."""

    config_class = ConformerConfig
    pretrained_dir = None  # trained from scratch with the model
    frozen = False

    @classmethod
    def cache_identity(cls, cfg: ConformerConfig, models_dir: Optional[str] = None) -> dict:
        raise XasrError("only a frozen pretrained encoder can be cached; model.encoder.name is 'conformer' "
                        "(it trains with the rest of the model)")

    @classmethod
    def from_identity(cls, identity: dict) -> "ConformerEncoder":
        raise XasrError("a conformer encoder is not cached")

    def pretrained_param_names(self) -> List[str]:
        return []  # every parameter is the model's own

    def __init__(self, cfg: ConformerConfig, models_dir: Optional[str] = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.subsampling = Conv2dSubsampling(cfg.input_dim, cfg.dim, cfg.subsampling,
                                             cfg.subsampling_channels or cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.rotary = RotaryEmbedding(cfg.dim // cfg.num_heads, cfg.rotary_base)
        self.blocks = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.num_layers))

    @property
    def output_dim(self) -> int:
        return self.cfg.dim

    def output_lengths(self, feat_lens: Tensor) -> Tensor:
        """Encoder output lengths for input lengths (B,) -> (B,)."""
        return self.subsampling.output_lengths(feat_lens)

    def forward(self, feats: Tensor, feat_lens: Tensor) -> Tuple[Tensor, Tensor]:
        if self.training and self.cfg.spec_augment:
            feats = spec_augment(feats, feat_lens, self.cfg)
        x = self.dropout(self.subsampling(feats))  # (B, T', D)
        h_lens = self.output_lengths(feat_lens)  # (B,)
        valid = lengths_to_mask(h_lens, x.size(1))  # (B, T')
        # A sequence with no valid frame would attend to nothing (NaN); let it attend to all.
        key_mask = valid | (h_lens == 0)[:, None]
        cos, sin = self.rotary(x.size(1), x.dtype)
        for block in self.blocks:
            x = block(x, valid, key_mask, cos, sin)
        return x.masked_fill(~valid[:, :, None], 0.0), h_lens  # (B, T', D), (B,)

