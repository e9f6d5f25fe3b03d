"""Voice activity detection (Silero confirmed by energy, or energy alone) and segmentation of
long audio into bounded pieces.

In: mono samples at ``sample_rate``. Out: speech segments ``[(start, end), ...]`` in samples,
in order, none longer than ``max_segment`` seconds, or ``[]`` when the signal holds no speech
(the model is then never run on it).

Frames are 10 ms slots; a slot's energy is the mean square over a 30 ms window centred on it
(weights 1/4, 1/2, 1/4 of the neighbouring slots), in dB relative to full scale (a full-scale
sine is -3 dB). A slot is speech when its energy is

- at least ``abs_db`` (default -55 dB): anything quieter is silence, whatever the file;
- at most ``rel_db`` (40 dB) below the file's loud frames (the ``ref_percentile`` = 95th
  percentile of slot energies): quiet background under loud speech is not speech;
- at least ``floor_margin_db`` (6 dB) above the file's noise floor (the ``floor_percentile`` =
  10th percentile): steady noise at any level, whose frames all sit within a few dB of each
  other, is not speech.

Then smoothing: pauses shorter than ``min_silence`` (0.6 s) are bridged, speech runs shorter
than ``min_speech`` (0.1 s, clicks) are dropped, and each run is widened by ``pad`` (0.2 s) on
both sides (clipped to the signal). Runs longer than ``max_segment`` (20 s) are split, never
dropped: each piece ends at the quietest slot (energy smoothed over 50 ms) within the second
half of its allowed length, and the next piece starts there, so the pieces cover the run
exactly. ``enabled=False`` treats the whole signal as one run (only the length bound applies).

``detector="silero"`` (the default) finds the speech runs with the Silero VAD neural model (the
ONNX model faster-whisper ships, through its ``get_speech_timestamps``; 16 kHz input; a 32-ms
frame is speech above ``silero_threshold``) and keeps those that overlap a run of the energy
detector, so steady sounds it takes for speech (sustained music) are still refused; the same
bridging, dropping, padding and splitting follow.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

SLOT_SECONDS = 0.01


@dataclass
class VadConfig:
    enabled: bool = True  # False: the whole signal is speech (still split at max_segment)
    abs_db: float = -55.0  # slots quieter than this (dB full scale) are never speech
    rel_db: float = 40.0  # ... nor those more than this below the loud frames
    ref_percentile: float = 95.0  # "loud frames": this percentile of slot energies
    floor_margin_db: float = 6.0  # speech must exceed the noise floor by this much
    floor_percentile: float = 10.0  # "noise floor": this percentile of slot energies
    min_silence: float = 0.6  # seconds; shorter pauses stay inside a segment
    min_speech: float = 0.1  # seconds; shorter bursts are dropped
    pad: float = 0.2  # seconds of context kept before and after speech
    max_segment: float = 20.0  # seconds; longer speech is split at its quietest point
    detector: str = "silero"  # "silero" (a neural VAD) or "energy" (the thresholds above)
    silero_threshold: float = 0.5  # speech probability above which a Silero frame is speech


DETECTORS = ("energy", "silero")


def slot_energies_db(samples: np.ndarray, sample_rate: int, chunk_slots: int = 60000) -> np.ndarray:
    """Energy per 10-ms slot (dB full scale, 30-ms centred window), computed in chunks."""
    hop = max(1, int(round(sample_rate * SLOT_SECONDS)))
    n = len(samples)
    n_slots = max(1, -(-n // hop))
    power = np.empty(n_slots, dtype=np.float64)
    step = chunk_slots * hop
    for i in range(0, n_slots, chunk_slots):  # bounded memory for hour-long inputs
        x = np.asarray(samples[i * hop:i * hop + step], dtype=np.float64)
        full = len(x) // hop
        if full:
            power[i:i + full] = np.square(x[:full * hop]).reshape(full, hop).mean(axis=1)
        if len(x) > full * hop:  # a last, partial slot
            power[i + full] = np.square(x[full * hop:]).mean()
    padded = np.concatenate([power[:1], power, power[-1:]])
    smooth = 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]
    return 10.0 * np.log10(smooth + 1e-12)


def _runs(mask: np.ndarray) -> List[Tuple[int, int]]:
    """[(start, end)) index ranges where mask is True."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def silero_runs(samples: np.ndarray, sample_rate: int, n_slots: int, cfg: VadConfig) -> List[Tuple[int, int]]:
    """Speech runs in 10-ms slots from the Silero VAD model (before bridging and padding)."""
    if sample_rate != 16000:
        raise ValueError(f"the Silero VAD takes 16 kHz audio, not {sample_rate} Hz")
    try:
        from faster_whisper.vad import VadOptions, get_speech_timestamps
    except ImportError as e:
        from xasr.errors import XasrError

        raise XasrError(f"the Silero VAD comes with faster-whisper, which cannot be imported ({e})") from None
    found = get_speech_timestamps(np.asarray(samples, dtype=np.float32),
                                  VadOptions(threshold=cfg.silero_threshold, min_speech_duration_ms=0,
                                             min_silence_duration_ms=0, speech_pad_ms=0), sampling_rate=sample_rate)
    hop = sample_rate * SLOT_SECONDS
    return [(int(d["start"] // hop), min(n_slots, int(-(-d["end"] // hop)))) for d in found]


def speech_runs(energy_db: np.ndarray, cfg: VadConfig, found: Optional[List[Tuple[int, int]]] = None
                ) -> List[Tuple[int, int]]:
    """Speech runs in slots, [(start, end)), after thresholds (or the runs another detector
    ``found``) and smoothing (without padding)."""
    n = len(energy_db)
    if not cfg.enabled:
        return [(0, n)]
    if found is not None:
        runs = list(found)
    else:
        ref = np.percentile(energy_db, cfg.ref_percentile)
        floor = np.percentile(energy_db, cfg.floor_percentile)
        threshold = max(cfg.abs_db, ref - cfg.rel_db, floor + cfg.floor_margin_db)
        runs = _runs(energy_db >= threshold)
    min_gap = int(round(cfg.min_silence / SLOT_SECONDS))
    bridged: List[Tuple[int, int]] = []
    for s, e in runs:
        if bridged and s - bridged[-1][1] < min_gap:
            bridged[-1] = (bridged[-1][0], e)
        else:
            bridged.append((s, e))
    min_len = int(round(cfg.min_speech / SLOT_SECONDS))
    return [(s, e) for s, e in bridged if e - s >= min_len]


def split_run(start: int, end: int, energy_db: np.ndarray, max_slots: int) -> List[Tuple[int, int]]:
    """Split [start, end) into contiguous pieces of at most ``max_slots`` slots, each cut at the
    quietest slot (50-ms smoothing) in the second half of the piece's allowed span."""
    pieces = []
    kernel = np.ones(5) / 5.0
    while end - start > max_slots:
        lo, hi = start + max_slots // 2, start + max_slots  # the cut lies in [lo, hi]
        window = energy_db[max(lo - 2, 0):min(hi + 3, len(energy_db))]
        smooth = np.convolve(window, kernel, mode="same")[lo - max(lo - 2, 0):][:hi - lo + 1]
        cut = lo + int(np.argmin(smooth))
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces


def segment_speech(samples: np.ndarray, sample_rate: int, cfg: VadConfig = VadConfig()) -> List[Tuple[int, int]]:
    """Speech segments [(start, end)) in samples, in order, each at most ``cfg.max_segment`` s."""
    n = len(samples)
    if n == 0:
        return []
    hop = max(1, int(round(sample_rate * SLOT_SECONDS)))
    energy = slot_energies_db(samples, sample_rate)
    n_slots = len(energy)
    pad = int(round(cfg.pad / SLOT_SECONDS))
    max_slots = max(2, int(round(cfg.max_segment / SLOT_SECONDS)))
    if cfg.detector not in DETECTORS:
        raise ValueError(f"unknown VAD detector {cfg.detector!r}; choose from {', '.join(DETECTORS)}")
    found = None
    if cfg.enabled and cfg.detector == "silero":
        # Silero's runs, kept where the energy detector also hears something: its cut points,
        # and the energy detector's refusal of steady sounds (hum, noise, sustained music)
        loud = speech_runs(energy, cfg)
        found = [(a, b) for a, b in silero_runs(samples, sample_rate, n_slots, cfg)
                 if any(a < e and s < b for s, e in loud)]
    runs = []
    for s, e in speech_runs(energy, cfg, found):
        s, e = max(0, s - pad), min(n_slots, e + pad)
        if runs and s <= runs[-1][1]:  # padding closed the gap
            runs[-1] = (runs[-1][0], e)
        else:
            runs.append((s, e))
    segments = []
    for s, e in runs:
        for a, b in split_run(s, e, energy, max_slots):
            segments.append((a * hop, min(n, b * hop)))
    return [(a, b) for a, b in segments if b > a]
