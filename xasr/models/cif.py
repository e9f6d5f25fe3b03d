"""Continuous integrate-and-fire (CIF): frame-rate encodings -> one vector per output token.

In: frames ``h`` (B, T, D) with valid lengths ``h_lens`` (B,); during training also the number
of target tokens per sequence, ``target_lens`` (B,).
Out: :class:`CifOutput`: the fired vectors (B, N, D) and how many are valid per sequence
(``fired_lens``, B), the predicted per-frame weights ``alphas`` (B, T) and, with targets, the
quantity loss.

CIF (Dong & Xu, "CIF: Continuous Integrate-and-Fire for End-to-End Speech Recognition",
ICASSP 2020) is the compressor inside X-LLM's C-Former. Each frame gets a weight
``alpha_t = sigmoid(linear(relu(conv1d(h))))`` in (0, 1). Walking over time, the weights are
integrated; when the accumulated weight reaches ``threshold`` (1.0) at frame t, alpha_t is split:
the part that completes the threshold goes to the current token, the remainder starts the next
one (a frame whose weight exceeds the threshold can complete several tokens). A fired vector is
the alpha-weighted sum of the frames it integrated.

Training (``target_lens`` given): the alphas are scaled so that they sum to the target length N
of each sequence, which makes exactly N tokens fire (float round-off is handled: an unfinished
last token counts), and the quantity loss ``|sum_t alpha_t - N|`` (raw, unscaled alphas; mean
over the batch; N times the threshold when that is not 1) teaches the predictor to count.
Inference (no targets): the raw alphas fire as they are; an accumulated weight above
``tail_threshold`` left at the end fires one last token.

:func:`cif_fire` is the integrate-and-fire step alone, so that hand-chosen alphas can be fired.
It has no loop: with the integrated weight c_t = alpha_1 + ... + alpha_t, token k owns the
stretch [k, k + 1) * threshold of it and frame t the stretch [c_t - alpha_t, c_t), so the
integration weights (B, N, T), each token's share of each frame, are the overlaps of the two;
the fired vectors are one batched matrix product. The result is differentiable with respect to
both ``h`` and ``alphas`` and equals the frame-by-frame walk (a token whose weight is within
eps of the threshold fires; the next one then starts up to eps later in the walk than here).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)


def lengths_to_mask(lens: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, max_len) bool mask, True on valid positions."""
    return torch.arange(max_len, device=lens.device)[None, :] < lens[:, None]


@dataclass
class CifConfig:
    input_dim: Optional[int] = None  # None: set by the owner (the C-Former sets its own dim)
    conv_kernel: int = 3  # odd; 'same' padding over time
    conv_channels: Optional[int] = None  # None: input_dim
    dropout: float = 0.1  # on the conv output, before the alpha projection
    threshold: float = 1.0
    tail_threshold: float = 0.5  # inference only: a remainder above this fires a last token
    eps: float = 1e-4  # an accumulated weight within eps of the threshold fires (round-off)


class CifFired(NamedTuple):
    fired: Tensor  # (B, N, D) alpha-weighted sums of frames; zero beyond fired_lens
    fired_lens: Tensor  # (B,) long
    weights: Tensor  # (B, N, T) share of frame t in token n; zero beyond fired_lens
    fire_frames: Tensor  # (B, N) long: the frame at which each token fired; -1 beyond fired_lens


@dataclass
class CifOutput:
    fired: Tensor  # (B, N, D)
    fired_lens: Tensor  # (B,)
    alphas: Tensor  # (B, T) raw predicted weights (before any scaling), 0 beyond h_lens
    quantity_loss: Optional[Tensor]  # scalar, only with target lengths
    fire_frames: Optional[Tensor] = None  # (B, N) frame index of each firing, -1 on padding


def cif_fire(h: Tensor, alphas: Tensor, h_lens: Tensor, threshold: float = 1.0,
             tail_threshold: Optional[float] = None, target_lens: Optional[Tensor] = None,
             eps: float = 1e-4) -> CifFired:
    """Integrate ``alphas`` over time and fire a token each time they reach ``threshold``.

    h: (B, T, D) frames; alphas: (B, T) non-negative weights (values beyond ``h_lens`` are
    ignored); h_lens: (B,).
    A token fires at frame t when its accumulated weight reaches ``threshold - eps``; the part
    of alpha_t that completes the threshold (all of it if less is left) goes to that token and
    the remainder starts the next one, which may fire in the same frame.

    target_lens (B,): the output has exactly ``target_lens`` tokens per sequence: an unfinished
    last token (round-off: the alphas were scaled to sum to N but reached only N - 1e-6) fires
    with what it has; tokens fired beyond N are dropped; if the alphas cannot make N tokens,
    the missing ones are zero vectors. ``tail_threshold`` is ignored in that case.
    tail_threshold (inference): an unfinished token whose weight exceeds it fires at the end.
    """
    if threshold <= eps:
        raise ValueError(f"threshold must exceed eps ({threshold} <= {eps})")
    B, T, _ = h.shape
    valid = lengths_to_mask(h_lens, T)  # (B, T)
    alphas = torch.where(valid, alphas, torch.zeros_like(alphas))  # (B, T)
    last = (h_lens - 1).clamp(min=0).to(torch.long)  # (B,)

    # Token k owns the stretch [k * threshold, (k + 1) * threshold) of the integrated weight;
    # frame t covers [c_t - alpha_t, c_t), so its share in token k is the overlap of the two.
    c = torch.cumsum(alphas, dim=1)  # (B, T) weight integrated up to and including frame t
    total = c[:, -1] if T > 0 else alphas.new_zeros(B)  # (B,)
    complete = torch.floor((total.detach() + eps) / threshold).to(torch.long)  # (B,) tokens that fire
    if target_lens is not None:
        fired_lens = target_lens.to(device=h.device, dtype=torch.long)
    elif tail_threshold is not None:
        tail = (total.detach() - complete * threshold) > tail_threshold  # (B,) an unfinished token fires at the end
        fired_lens = complete + tail.long()
    else:
        fired_lens = complete
    n_out = int(fired_lens.max().item()) if B > 0 else 0

    k = torch.arange(n_out, device=h.device, dtype=alphas.dtype)[None, :, None]  # (1, N, 1)
    lo, hi = k * threshold, (k + 1) * threshold
    start = (c - alphas)[:, None, :]  # (B, 1, T)
    end = c[:, None, :]  # (B, 1, T)
    weights = (torch.minimum(end, hi) - torch.maximum(start, lo)).clamp(min=0.0)  # (B, N, T)
    keep = lengths_to_mask(fired_lens, n_out)  # (B, N)
    weights = weights * keep[:, :, None].to(weights.dtype)

    # a token fires at the first frame where the integrated weight reaches its end (within eps)
    with torch.no_grad():
        reached = (c[:, None, :] >= hi - eps) & valid[:, None, :]  # (B, N, T)
        first = torch.where(reached.any(dim=2), reached.to(torch.int8).argmax(dim=2),
                            torch.full((B, n_out), -1, dtype=torch.long, device=h.device))  # (B, N)
        first = first.to(torch.long)
        slot = torch.arange(n_out, device=h.device)[None, :]  # (1, N)
        # the unfinished token (slot `complete`) fires at the last frame when it is kept
        ends_late = (slot == complete[:, None]) & keep & (first < 0)
        first = torch.where(ends_late, last[:, None].expand_as(first), first)
        fire_frames = torch.where(keep, first, torch.full_like(first, -1))
    fired = torch.bmm(weights.to(h.dtype), h)  # (B, N, D)
    return CifFired(fired, fired_lens, weights, fire_frames)


class CifCompressor(nn.Module):
    """Predicts the per-frame weights and fires one vector per token; see the module docstring."""

    def __init__(self, cfg: CifConfig) -> None:
        super().__init__()
        if cfg.input_dim is None:
            raise ValueError("CifConfig.input_dim is not set")
        if cfg.conv_kernel % 2 != 1:
            raise ValueError(f"CifConfig.conv_kernel must be odd, not {cfg.conv_kernel}")
        self.cfg = cfg
        channels = cfg.conv_channels or cfg.input_dim
        self.conv = nn.Conv1d(cfg.input_dim, channels, cfg.conv_kernel, padding=cfg.conv_kernel // 2)
        self.dropout = nn.Dropout(cfg.dropout)
        self.weight_proj = nn.Linear(channels, 1)

    def predict_alphas(self, h: Tensor, h_lens: Tensor) -> Tensor:
        """(B, T, D), (B,) -> alphas (B, T) in (0, 1), exactly 0 beyond each length."""
        valid = lengths_to_mask(h_lens, h.size(1))  # (B, T)
        x = h.masked_fill(~valid[:, :, None], 0.0)  # padding must not leak into the conv
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)  # (B, T, C)
        x = self.dropout(torch.relu(x))
        alphas = torch.sigmoid(self.weight_proj(x).squeeze(-1))  # (B, T)
        return alphas.masked_fill(~valid, 0.0)

    def forward(self, h: Tensor, h_lens: Tensor, target_lens: Optional[Tensor] = None,
                alphas: Optional[Tensor] = None) -> CifOutput:
        """h (B, T, D), h_lens (B,), target_lens (B,) or None; alphas (B, T): weights from
        elsewhere (e.g. the CTC head's non-blank probability) instead of the predictor's.

        With ``target_lens`` (training, and validation losses) the alphas are scaled to sum to
        N and exactly N vectors fire; without (decoding) the predicted alphas decide the count.
        """
        cfg = self.cfg
        if alphas is None:
            alphas = self.predict_alphas(h, h_lens)  # (B, T)
        else:
            alphas = alphas.masked_fill(~lengths_to_mask(h_lens, h.size(1)), 0.0)
        if target_lens is None:
            out = cif_fire(h, alphas, h_lens, cfg.threshold, tail_threshold=cfg.tail_threshold, eps=cfg.eps)
            return CifOutput(out.fired, out.fired_lens, alphas, None, out.fire_frames)
        n = target_lens.to(alphas.dtype)  # (B,)
        total = alphas.sum(dim=1)  # (B,)
        quantity_loss = (total - n * cfg.threshold).abs().mean()
        scaled = alphas * (n * cfg.threshold / total.clamp(min=1e-6))[:, None]  # (B, T), sums to N
        out = cif_fire(h, scaled, h_lens, cfg.threshold, target_lens=target_lens, eps=cfg.eps)
        return CifOutput(out.fired, out.fired_lens, alphas, quantity_loss, out.fire_frames)
