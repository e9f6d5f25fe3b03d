"""Audio loading for transcription: any file soundfile or PyAV reads, piped commands, arrays, lhotse cuts.

In: a path (wav, flac, ogg, mp3 through soundfile; m4a, mp4, webm, opus, aac and any other
container and codec FFmpeg decodes through PyAV when soundfile cannot; any sample rate, bit
depth and channel count), a Kaldi
``wav.scp`` command (``sox in.wav -t wav - |``, whose standard output must be an audio file),
an array with its sample rate, or a lhotse cut.
Out: one channel of float32 samples in [-1, 1] at the model's rate (16 kHz).

Conversions: channels are averaged (down-mix), then the signal is resampled with lhotse's
``Resample`` (what ``CutSet.resample`` does in a recipe). Each distinct conversion is logged
once, with the first file it applied to, not once per file; :meth:`AudioConverter.summary`
counts them at the end.

Problems a user can fix raise :class:`AudioError` with a message naming the file or command:
missing or empty file, a file that is not audio, a failing command, no samples, NaN or
infinite samples. A damaged file that still decodes in part (a WAV whose header promises more
data than the file holds) is decoded, and :func:`damage_warning` says what the header promised
and what was read.
"""
from __future__ import annotations

import io
import logging
import os
import struct
import subprocess
import threading
from collections import Counter
from typing import Optional, Tuple

import numpy as np

from xasr.errors import XasrError

logger = logging.getLogger(__name__)

MODEL_SAMPLE_RATE = 16000


class AudioError(XasrError):
    """An input that cannot be turned into samples; the message names it and the problem."""


def decode_with_av(source, name: str) -> Tuple[np.ndarray, int]:
    """Decode the first audio stream of a file (path or file object) with PyAV (FFmpeg);
    returns (samples (n, channels) float32, sample rate). Raises AudioError naming the problem."""
    try:
        import av
    except ImportError:
        raise AudioError(f"{name}: soundfile cannot read it and PyAV (for other containers) is not "
                         "installed") from None
    try:
        with av.open(source) as container:
            if not container.streams.audio:
                raise AudioError(f"{name}: no audio stream (streams: "
                                 f"{', '.join(s.type for s in container.streams) or 'none'})")
            stream = container.streams.audio[0]
            rate, chunks = 0, []
            for frame in container.decode(stream):
                x = frame.to_ndarray()
                rate = frame.sample_rate or rate
                if frame.format.is_planar:  # (channels, n)
                    x = x.T
                else:  # interleaved: (1, n * channels)
                    x = x.reshape(-1, len(frame.layout.channels))
                if x.dtype.kind == "i":
                    x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
                elif x.dtype.kind == "u":  # unsigned 8-bit PCM
                    x = (x.astype(np.float32) - 128.0) / 128.0
                chunks.append(x.astype(np.float32, copy=False))
    except AudioError:
        raise
    except Exception as e:  # av.error.* (InvalidDataError, ...) and decoder failures
        raise AudioError(f"{name}: not a readable audio file ({_short(e)})") from None
    if not chunks or rate <= 0:
        raise AudioError(f"{name}: its audio stream holds no samples")
    return np.concatenate(chunks, axis=0), int(rate)


def read_audio_bytes(data: bytes, name: str) -> Tuple[np.ndarray, int]:
    """Decode an in-memory audio file; returns (samples (n, channels) float32, sample rate)."""
    import soundfile as sf

    if not data:
        raise AudioError(f"{name}: no audio data (0 bytes)")
    try:
        samples, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError or TypeError
        try:
            return decode_with_av(io.BytesIO(data), name)
        except AudioError:
            raise AudioError(f"{name}: not a readable audio file ({_short(e)})") from None
    return samples, int(sr)


def read_audio_file(path: str) -> Tuple[np.ndarray, int]:
    """Read an audio file; returns (samples (n, channels) float32, sample rate)."""
    import soundfile as sf

    if not os.path.exists(path):
        raise AudioError(f"{path}: no such file")
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a directory, not an audio file")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: the file is empty (0 bytes)")
    try:
        samples, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:
        try:
            info = sf.info(path)
        except Exception:
            info = None
        if info is None and not _soundfile_header(path):  # m4a, mp4, webm, aac, ...: FFmpeg through PyAV
            return decode_with_av(path, path)
        promised = ""
        if info is not None and info.frames > 0 and info.samplerate > 0:  # a header that reads, data that does not
            promised = (f"; its header promises {info.frames / info.samplerate:.2f} s of audio, so the file "
                        "is probably truncated or damaged")
        raise AudioError(f"{path}: not a readable audio file ({_short(e)}){promised}") from None
    return samples, int(sr)


def _soundfile_header(path: str) -> bool:
    """Whether the file starts like a format libsndfile owns (WAV, FLAC, AIFF): its error is then
    the one to report, rather than handing a damaged file to FFmpeg, which decodes what it can."""
    with open(path, "rb") as f:
        head = f.read(12)
    return head[:4] in (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"FORM")


def _wav_data_chunk(head: bytes) -> Optional[Tuple[int, int, int, int]]:
    """(data offset, data bytes the header declares, bytes per frame, sample rate) of a RIFF
    WAVE header, or None when it is not one or declares no usable length (streamed WAVs write
    0 or 0xFFFFFFFF)."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, block, rate = 12, 0, 0
    while pos + 8 <= len(head):
        cid, size = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
        body = pos + 8
        if cid == b"fmt " and body + 14 <= len(head):
            rate = struct.unpack("<I", head[body + 4:body + 8])[0]
            block = struct.unpack("<H", head[body + 12:body + 14])[0]
        elif cid == b"data":
            if size in (0, 0xFFFFFFFF) or block <= 0 or rate <= 0:
                return None
            return body, size, block, rate
        pos = body + size + (size & 1)  # chunks are padded to an even length
    return None


def damage_warning(path: str, frames_read: int) -> Optional[str]:
    """A message naming what a WAV file's header promised and what the file held, when the two
    differ (a copy cut short, a full disk); None for a whole file or another format."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
        size = os.path.getsize(path)
    except OSError:
        return None
    chunk = _wav_data_chunk(head)
    if chunk is None:
        return None
    offset, declared, block, rate = chunk
    held = max(0, size - offset)
    if declared <= held:
        return None
    return (f"{path}: truncated or damaged WAV: its header promises {declared // block / rate:.2f} s of audio "
            f"({declared} bytes of data) but the file holds {held} bytes; {frames_read / rate:.2f} s were read "
            "and transcribed")


def read_audio_command(command: str, timeout: Optional[float] = None) -> Tuple[np.ndarray, int]:
    """Run a Kaldi-style pipe (``cmd ... |``) and decode the audio file it writes to stdout."""
    cmd = command.rstrip()
    if cmd.endswith("|"):
        cmd = cmd[:-1].rstrip()
    try:
        proc = subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AudioError(f"command '{command}': no result within {timeout} s") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioError(f"command '{command}' failed with exit status {proc.returncode}"
                         + (f": {err[-1][:300]}" if err else ""))
    return read_audio_bytes(proc.stdout, f"command '{command}'")


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()
    return (msg[-1] if msg else type(e).__name__)[:300]


def check_samples(samples: np.ndarray, name: str) -> None:
    """Refuse empty signals and NaN or infinite samples."""
    if samples.size == 0:
        raise AudioError(f"{name}: no samples (empty audio)")
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        raise AudioError(f"{name}: {bad} NaN or infinite samples")


class AudioConverter:
    """Down-mix and resample to one channel at ``target_rate``; logs each kind of conversion once.

    Thread-safe: inputs may be loaded by worker threads.
    """

    def __init__(self, target_rate: int = MODEL_SAMPLE_RATE) -> None:
        self.target_rate = target_rate
        self.counts: Counter = Counter()
        self._lock = threading.Lock()
        self._resamplers = {}

    def _note(self, key: str, message: str, name: str) -> None:
        with self._lock:
            first = key not in self.counts
            self.counts[key] += 1
        if first:
            logger.info("%s (first: %s); logged once, counted in the final summary", message, name)

    def convert(self, samples: np.ndarray, sample_rate: int, name: str) -> np.ndarray:
        """``samples`` (n,) or (n, channels) -> (m,) float32 at ``target_rate``.

        A 2-D array with at most 8 rows and more columns is taken as (channels, n). Integer
        PCM is scaled to [-1, 1]; float samples are used as they are.
        """
        x = np.asarray(samples)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2:
            raise AudioError(f"{name}: expected samples of shape (n,) or (n, channels), got {x.shape}")
        if x.shape[0] <= 8 < x.shape[1]:  # (channels, n), as lhotse and torchaudio give
            x = x.T
        if not np.issubdtype(x.dtype, np.floating):
            if np.issubdtype(x.dtype, np.integer):  # PCM integers: scale to [-1, 1]
                x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
            else:
                raise AudioError(f"{name}: samples of type {x.dtype} are not audio")
        x = x.astype(np.float32, copy=False)
        check_samples(x, name)
        if sample_rate <= 0:
            raise AudioError(f"{name}: invalid sample rate {sample_rate}")
        channels = x.shape[1]
        if channels > 1:
            self._note(f"downmix-{channels}", f"down-mixing {channels}-channel audio to mono (channel mean)", name)
            x = x.mean(axis=1, dtype=np.float32, keepdims=True)
        mono = x[:, 0]
        if sample_rate != self.target_rate:
            self._note(f"resample-{sample_rate}",
                       f"resampling {sample_rate} Hz audio to {self.target_rate} Hz (lhotse Resample)", name)
            mono = self._resample(mono, sample_rate)
        return np.ascontiguousarray(mono, dtype=np.float32)

    def _resample(self, mono: np.ndarray, sample_rate: int) -> np.ndarray:
        import torch
        from lhotse.augmentation import Resample

        with self._lock:
            rs = self._resamplers.get(sample_rate)
            if rs is None:
                rs = self._resamplers[sample_rate] = Resample(sample_rate, self.target_rate)
        with torch.no_grad():
            out = rs(mono[None, :].copy())
        return np.asarray(out, dtype=np.float32)[0]

    def summary(self) -> str:
        """e.g. "resampled 3 inputs from 8000 Hz, down-mixed 2 inputs with 2 channels"; "" if none."""
        parts = []
        for key, n in sorted(self.counts.items()):
            kind, value = key.split("-", 1)
            if kind == "resample":
                parts.append(f"resampled {n} input{'s' * (n != 1)} from {value} Hz")
            else:
                parts.append(f"down-mixed {n} input{'s' * (n != 1)} with {value} channels")
        return ", ".join(parts)
