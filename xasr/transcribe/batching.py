"""Raw audio -> the features a model was trained on -> padded batches for decoding
(:func:`xasr.decoding.methods.decode`).

In: mono 16 kHz float32 samples per segment, and the model's feature type
(``cfg.data.features``): ``"fbank"`` (kaldi fbank exactly as lhotse's ``Fbank`` computes it in
:func:`xasr.data.features.compute_fbank`, ``FbankConfig(num_mel_bins=N)`` with N the
encoder's input size, 80 in the recipes) or ``"whisper_mel"``
(:func:`xasr.data.whisper_mel.whisper_log_mel`, per segment as training computes it
per utterance).
Out: the batch keys :class:`xasr.data.dataset.AsrDataset` produces and ``decode`` reads:
``ids``, ``feats`` (B, T, F) padded as training pads them, ``feat_lens`` (B,), ``durations`` (B,) and ``texts``
(empty strings).
"""
from __future__ import annotations

from typing import Callable, List, Sequence

import numpy as np
import torch
from torch import Tensor

from xasr.data.dataset import Batch, feature_pad_value, pad_features

FEATURE_TYPES = ("fbank", "whisper_mel")


def make_batch(ids: Sequence[str], feats: Sequence[Tensor], durations: Sequence[float], kind: str) -> Batch:
    """A :class:`xasr.data.dataset.Batch` of segments' features (T_i, F) of ``kind``, in the order
    given, padded as training pads that kind (:func:`xasr.data.dataset.feature_pad_value`)."""
    padded, lens = pad_features(feats, value=feature_pad_value(kind))
    return Batch(padded, lens, ids=list(ids), texts=[""] * len(ids),
                 durations=torch.tensor([float(d) for d in durations]))


def feature_function(kind: str, num_bins: int, sample_rate: int = 16000) -> Callable[[np.ndarray], Tensor]:
    """A function: mono samples (n,) -> features (T, num_bins) as float32 tensor."""
    if kind == "fbank":
        from xasr.data.features import fbank_extractor

        extractor = fbank_extractor(num_bins)  # as xasr.data.features.compute_fbank stores them

        def fbank(samples: np.ndarray) -> Tensor:
            x = np.ascontiguousarray(samples, dtype=np.float32)[None, :]  # (1, n) as lhotse loads cuts
            return torch.as_tensor(np.asarray(extractor.extract(x, sample_rate)), dtype=torch.float32)

        return fbank
    if kind == "whisper_mel":
        from xasr.data.whisper_mel import whisper_log_mel

        def mel(samples: np.ndarray) -> Tensor:
            return whisper_log_mel(np.asarray(samples, dtype=np.float32), sample_rate, n_mels=num_bins)

        return mel
    raise ValueError(f"unknown feature type {kind!r}; expected one of {FEATURE_TYPES}")


def model_feature_bins(model, kind: str) -> int:
    """The feature size the model's encoder reads."""
    enc = model.cfg.encoder
    if kind == "whisper_mel":
        return int(getattr(model.encoder, "num_mel_bins", 80))
    sub = getattr(enc, enc.name, None)
    return int(getattr(sub, "input_dim", 80))


def min_feature_frames(model, limit: int = 10000) -> int:
    """The fewest feature frames for which the encoder yields at least one output frame."""
    lens = torch.arange(1, limit + 1)
    out = model.encoder.output_lengths(lens)
    ok = torch.nonzero(out >= 1)
    return int(lens[ok[0, 0]]) if len(ok) else 1


def max_feature_frames(model) -> int:
    """The most frames the encoder accepts (Whisper: 3000, 30 s); 0: no limit."""
    return int(getattr(model.encoder, "max_frames", 0) or 0)


def list_batches(durations: Sequence[float], max_seconds: float) -> List[List[int]]:
    """Indices grouped into batches, longest first, each with at most ``max_seconds`` of audio
    (a longer item goes alone)."""
    order = sorted(range(len(durations)), key=lambda i: (-durations[i], i))
    batches: List[List[int]] = []
    total = 0.0
    for i in order:
        if batches and total + durations[i] <= max_seconds:
            batches[-1].append(i)
            total += durations[i]
        else:
            batches.append([i])
            total = durations[i]
    return batches
