"""Offline text-to-speech through the Debian engines espeak-ng, flite and festival.

In: a :class:`Voice` (engine, voice name, speaking rate, pitch) and a list of texts.
Out: 16 kHz mono float32 waveforms in [-1, 1], one per text.

espeak-ng and flite are started once per utterance (they start in milliseconds); festival is
started once per batch with a Scheme script that speaks every text of the batch, since its
start-up costs far more than its synthesis.
"""
from __future__ import annotations

from xasr.errors import XasrError

import io
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import List, Sequence

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

TARGET_SAMPLE_RATE = 16000

ENGINE_COMMAND = {"espeak": "espeak-ng", "flite": "flite", "festival": "festival"}
ENGINE_INSTALL = {
    "espeak": "apt-get install -y espeak-ng",
    "flite": "apt-get install -y flite",
    "festival": "apt-get install -y festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts",
}
# festival voices with a linear-regression intonation model take a target mean F0.
FESTIVAL_DIPHONE_VOICES = ("kal_diphone", "ked_diphone")


class TTSError(XasrError):
    """An engine is missing or failed on a text."""


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker's voice.

    engine: "espeak" | "flite" | "festival"
    name: engine voice ("cmn-latn-pinyin+f3", "en-us+m2", "slt", "ked_diphone")
    rate: speaking-rate factor, 1.0 = the engine's default, >1 faster
    pitch: 0..1, 0.5 = the engine's default pitch for the voice, mapped per engine
    """

    engine: str
    name: str
    rate: float = 1.0
    pitch: float = 0.5

    @property
    def timbre(self) -> str:
        """The engine voice without rate and pitch: what makes two voices sound different."""
        return f"{self.engine}:{self.name}"


def check_engine(engine: str) -> None:
    """Raise TTSError naming the install command if the engine is not on PATH."""
    if engine not in ENGINE_COMMAND:
        raise TTSError(f"unknown TTS engine {engine!r}; known: {sorted(ENGINE_COMMAND)}")
    if shutil.which(ENGINE_COMMAND[engine]) is None:
        raise TTSError(
            f"TTS engine {ENGINE_COMMAND[engine]!r} not found on PATH. Install it with: "
            f"{ENGINE_INSTALL[engine]}   (or run: bash tools/setup.sh)"
        )


def _to_target(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    audio = audio.astype(np.float32)
    if sample_rate != TARGET_SAMPLE_RATE:
        g = gcd(sample_rate, TARGET_SAMPLE_RATE)
        audio = resample_poly(audio, TARGET_SAMPLE_RATE // g, sample_rate // g).astype(np.float32)
    return audio


def _run(cmd: Sequence[str], text: str, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), capture_output=True, check=False, **kwargs)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[:300] if isinstance(proc.stderr, bytes) else proc.stderr
        raise TTSError(f"{cmd[0]} failed (exit {proc.returncode}) on text {text[:60]!r}: {err}")
    return proc


def _espeak(voice: Voice, text: str) -> np.ndarray:
    wpm = int(round(175 * voice.rate))
    pitch = int(round(min(max(voice.pitch, 0.0), 1.0) * 99))
    proc = _run(["espeak-ng", "-v", voice.name, "-s", str(wpm), "-p", str(pitch), "--stdout", text], text)
    audio, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    return _to_target(audio, sr)


def _flite(voice: Voice, text: str, tmp: Path) -> np.ndarray:
    out = tmp / "flite.wav"
    f0 = 80 + 160 * voice.pitch  # 80..240 Hz target mean
    _run(["flite", "-voice", voice.name, "-t", text, "-o", str(out),
          "--setf", f"duration_stretch={1.0 / voice.rate:.3f}",
          "--setf", f"int_f0_target_mean={f0:.1f}"], text)
    audio, sr = sf.read(out, dtype="float32")
    return _to_target(audio, sr)


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _festival(voice: Voice, texts: Sequence[str], tmp: Path) -> List[np.ndarray]:
    lines = [f"(voice_{voice.name})", f"(Parameter.set 'Duration_Stretch {1.0 / voice.rate:.3f})"]
    if voice.name in FESTIVAL_DIPHONE_VOICES:
        f0 = 80 + 100 * voice.pitch
        lines.append(
            f"(set! int_lr_params '((target_f0_mean {f0:.1f}) (target_f0_std {f0 * 0.15:.1f}) "
            "(model_f0_mean 170) (model_f0_std 34)))"
        )
    paths = [tmp / f"fest{i:05d}.wav" for i in range(len(texts))]
    for text, path in zip(texts, paths):
        lines.append(f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(text)})) "
                     f"{_scheme_string(str(path))} 'riff)")
    script = tmp / "batch.scm"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _run(["festival", "-b", str(script)], texts[0] if texts else "")
    out = []
    for text, path in zip(texts, paths):
        if not path.is_file():
            raise TTSError(f"festival wrote no audio for text {text[:60]!r} (voice {voice.name})")
        audio, sr = sf.read(path, dtype="float32")
        out.append(_to_target(audio, sr))
    return out


def synthesize(voice: Voice, texts: Sequence[str]) -> List[np.ndarray]:
    """Speak each text with the voice; 16 kHz mono float32 arrays in the texts' order."""
    check_engine(voice.engine)
    with tempfile.TemporaryDirectory(prefix="xasr-tts-") as d:
        tmp = Path(d)
        if voice.engine == "espeak":
            return [_espeak(voice, t) for t in texts]
        if voice.engine == "flite":
            return [_flite(voice, t, tmp) for t in texts]
        return _festival(voice, texts, tmp)
