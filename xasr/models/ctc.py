"""CTC head on the encoder output: frames -> per-frame unit log-probabilities, loss, best path.

In: encoder output ``h`` (B, T, D) with lengths (B,); for the loss, padded unit targets (B, S)
with their lengths (B,).
Out: log-probabilities (B, T, V) (``forward``), a scalar loss (``loss``), unit id sequences
(``greedy_decode``).

The blank is unit 0 (``<blk>`` in :mod:`xasr.data.units`). The loss is torch's
``ctc_loss`` with ``zero_infinity=True`` (an utterance too short for its targets contributes
zero instead of inf), summed over the batch and divided by the total number of target units,
i.e. a per-unit loss, on the same scale as the C-Former's per-unit cross-entropy and not
biased towards short or long utterances.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BLANK_ID = 0


def min_blank_prob(log_probs: Tensor, lens: Tensor, blank_id: int = BLANK_ID) -> List[float]:
    """For each row b, the lowest blank posterior over its first ``lens[b]`` frames: 1 - the
    non-blank mass of the frame most likely to hold a unit. Near 0 when some frame is confidently
    not blank (speech), near 1 when every frame is blank (nothing said). An empty row gives 1."""
    if log_probs.shape[1] == 0:
        return [1.0] * log_probs.shape[0]
    blank = log_probs[..., blank_id].float().exp()  # (B, T)
    pad = torch.arange(blank.shape[1], device=blank.device)[None, :] >= lens[:, None].to(blank.device)
    return blank.masked_fill(pad, 1.0).amin(dim=1).clamp(0.0, 1.0).tolist()


def ctc_greedy_decode(log_probs: Tensor, lens: Tensor, blank_id: int = BLANK_ID) -> List[List[int]]:
    """Best path: argmax per frame (within ``lens``), collapse repeats, drop blanks."""
    best = log_probs.argmax(dim=-1).cpu()  # (B, T)
    out: List[List[int]] = []
    for b, n in enumerate(lens.tolist()):
        ids: List[int] = []
        prev = None
        for i in best[b, :n].tolist():
            if i != prev and i != blank_id:
                ids.append(i)
            prev = i
        out.append(ids)
    return out


class ClassTiedLinear(nn.Linear):
    """A linear layer to unit logits; with ``classes`` (a class id per unit: homophones share
    one), a unit's logit is its class's plus its own, so what is heard is learnt once per class
    from every member's examples and the unit's own part only tells homophones apart. Without
    classes it is an ``nn.Linear`` (the same state-dict keys)."""

    def __init__(self, input_dim: int, vocab_size: int, classes: Optional[Sequence[int]] = None) -> None:
        super().__init__(input_dim, vocab_size)
        self.class_proj: Optional[nn.Linear] = None
        if classes is not None:
            ids = torch.as_tensor(list(classes), dtype=torch.long)
            if ids.shape != (vocab_size,) or int(ids.min()) < 0:
                raise ValueError(f"unit classes: expected {vocab_size} class ids >= 0, got {tuple(ids.shape)}")
            self.register_buffer("classes", ids, persistent=False)
            self.class_proj = nn.Linear(input_dim, int(ids.max()) + 1)

    def forward(self, h: Tensor) -> Tensor:
        logits = super().forward(h)
        if self.class_proj is not None:
            logits = logits + self.class_proj(h)[..., self.classes]
        return logits


class CtcHead(nn.Module):
    def __init__(self, input_dim: int, vocab_size: int, blank_id: int = BLANK_ID,
                 classes: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        self.blank_id = blank_id
        self.proj = ClassTiedLinear(input_dim, vocab_size, classes)

    def forward(self, h: Tensor) -> Tensor:
        return F.log_softmax(self.proj(h), dim=-1)  # (B, T, V)

    def loss(self, log_probs: Tensor, lens: Tensor, targets: Tensor, target_lens: Tensor) -> Tensor:
        """log_probs (B, T, V), lens (B,), targets (B, S) padded, target_lens (B,) -> per-unit loss."""
        total = F.ctc_loss(log_probs.transpose(0, 1).float(), targets, lens, target_lens,  # (T, B, V)
                           blank=self.blank_id, reduction="sum", zero_infinity=True)
        return total / target_lens.sum().clamp(min=1)

    def greedy_decode(self, log_probs: Tensor, lens: Tensor) -> List[List[int]]:
        return ctc_greedy_decode(log_probs, lens, self.blank_id)

    def no_speech_prob(self, log_probs: Tensor, lens: Tensor) -> List[float]:
        """Per utterance, how sure the head is that nothing is said: the lowest blank posterior over
        its frames (:func:`min_blank_prob`)."""
        return min_blank_prob(log_probs, lens, self.blank_id)
