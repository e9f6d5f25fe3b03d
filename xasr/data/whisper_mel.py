"""Whisper's log-mel features of 16 kHz audio, without Whisper's padding to 30 s.

In: mono 16 kHz samples in [-1, 1] (numpy or torch, (samples,)). Out: (samples // 160, n_mels)
float32 log-mel frames at 10 ms, computed as Whisper's feature extractor does (the input of
:class:`xasr.models.whisper_encoder.WhisperSpeechEncoder`).
"""
from __future__ import annotations

import functools
from typing import Union

import numpy as np
import torch
from torch import Tensor

from xasr.errors import XasrError

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms window
HOP_LENGTH = 160  # 10 ms hop


@functools.lru_cache(maxsize=4)
def _mel_filters(n_mels: int, sample_rate: int) -> Tensor:
    """Slaney-style mel filter bank (as librosa / Whisper), (n_fft // 2 + 1, n_mels)."""
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                         max_frequency=sample_rate / 2, sampling_rate=sample_rate, norm="slaney",
                         mel_scale="slaney")
    return torch.from_numpy(np.asarray(fb, dtype=np.float32))


def whisper_log_mel(audio: Union[np.ndarray, Tensor], sample_rate: int = SAMPLE_RATE, n_mels: int = 80) -> Tensor:
    """16 kHz mono audio (samples,) in [-1, 1] -> Whisper log-mel features (samples // 160, n_mels).

    The same computation as Whisper's feature extractor (25 ms Hann window, 10 ms hop, centred
    STFT with reflect padding, power spectrum, Slaney mel bank, log10, dynamic range limited to
    8 (i.e. 80 dB) below the maximum, then ``(x + 4) / 4``) but without padding to 30 s. The
    last frame or two can differ slightly from the padded version, whose STFT window reaches
    into zeros instead of a reflection of the signal end.
    """
    if sample_rate != SAMPLE_RATE:
        raise XasrError(f"Whisper features need {SAMPLE_RATE} Hz audio, got {sample_rate} Hz: resample first")
    x = torch.as_tensor(audio, dtype=torch.float32)
    if x.dim() != 1:
        raise XasrError(f"whisper_log_mel expects one channel of samples (samples,), got shape {tuple(x.shape)}")
    if x.numel() < HOP_LENGTH:
        return torch.zeros(0, n_mels)
    window = torch.hann_window(N_FFT, device=x.device)
    pad_mode = "reflect" if x.numel() > N_FFT // 2 else "constant"
    stft = torch.stft(x, N_FFT, HOP_LENGTH, window=window, center=True, pad_mode=pad_mode, return_complex=True)
    power = stft[:, :-1].abs() ** 2  # (n_fft // 2 + 1, frames)
    mel = _mel_filters(n_mels, sample_rate).to(x.device).T @ power  # (n_mels, frames)
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).T.contiguous()  # (frames, n_mels)
