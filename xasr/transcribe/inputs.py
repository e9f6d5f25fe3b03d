"""What to transcribe: audio files, folders, Kaldi ``wav.scp`` lists, lhotse manifests, arrays.

In: a list of input specifications:

- an audio file (any extension; soundfile, or else PyAV/FFmpeg, decides whether it can read it): id =
  file stem;
- a folder: every file with an audio extension (:data:`AUDIO_EXTENSIONS`, any case) below it,
  recursively, sorted; id = the path relative to the folder without its extension;
- a Kaldi list (a file named ``*.scp``): ``<id> <path>`` or ``<id> <command> |`` per line, the
  command's standard output being an audio file (``sox in.wav -t wav - |``,
  ``flac -c -d x.flac |``); relative paths are relative to the working directory, as in Kaldi;
- a lhotse manifest (``*.jsonl.gz``, ``*.jsonl``, ``*.json``): a cut set (each cut's own audio
  range and id) or a recording set;
- ``(samples, sample_rate)``: an in-memory signal (samples (n,) or (n, channels)); id
  ``array-<k>`` (k counts from 0 over the arrays given).

Out: :class:`AudioSource` items with unique ids (whitespace in ids becomes ``_``; a repeated
id gets ``-2``, ``-3``, ... with a warning). A problem found while listing one entry (such as
an unsupported Kaldi ``ark:`` offset) becomes that item's ``error``; a list or folder that
cannot be read at all raises :class:`xasr.errors.XasrError`.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, List, Optional, Sequence

import numpy as np

from xasr.errors import XasrError
from xasr.transcribe.audio import AudioConverter, AudioError, damage_warning, read_audio_command, read_audio_file

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au", ".sph", ".caf", ".w64",
                    ".rf64", ".wv", ".m4a", ".mp4", ".aac", ".webm", ".mkv", ".mka", ".mov", ".wma", ".amr")
MANIFEST_SUFFIXES = (".jsonl.gz", ".jsonl", ".json", ".json.gz")


@dataclass
class AudioSource:
    """One thing to transcribe. ``kind``: "file", "command", "array" or "cut"."""

    id: str
    kind: str
    path: Optional[str] = None  # what outputs show: the file, the command, or the cut's audio file
    payload: Any = None  # (samples, rate) for arrays, the lhotse cut for cuts
    duration: Optional[float] = None  # seconds, when known without loading
    error: Optional[str] = None  # a problem found while listing
    warnings: List[str] = field(default_factory=list)  # problems found while loading that did not stop it

    def probe_duration(self) -> Optional[float]:
        """The duration in seconds if it can be known cheaply (file header, manifest, array)."""
        if self.duration is None and self.kind == "file" and self.error is None:
            try:
                import soundfile as sf

                info = sf.info(self.path)
                self.duration = info.frames / info.samplerate if info.samplerate > 0 else None
            except Exception:  # reported when the file is loaded
                pass
        return self.duration

    def load(self, converter: AudioConverter) -> np.ndarray:
        """Mono float32 samples at the converter's rate; raises AudioError naming the problem."""
        if self.error:
            raise AudioError(self.error)
        self.warnings = []
        if self.kind == "file":
            samples, rate = read_audio_file(self.path)
            name = self.path
            damaged = damage_warning(self.path, len(samples))
            if damaged:
                logger.warning("%s", damaged)
                self.warnings.append(damaged)
        elif self.kind == "command":
            samples, rate = read_audio_command(self.path)
            name = f"command '{self.path}'"
        elif self.kind == "array":
            samples, rate = self.payload
            name = f"array {self.id}"
        elif self.kind == "cut":
            cut = self.payload
            name = f"cut {self.id} ({self.path})" if self.path else f"cut {self.id}"
            try:
                samples = cut.load_audio()  # (channels, n)
            except Exception as e:
                msg = (str(e).strip().splitlines() or [type(e).__name__])[-1][:300]
                raise AudioError(f"{name}: cannot load audio ({msg})") from None
            samples, rate = np.asarray(samples).T, int(cut.sampling_rate)
        else:
            raise ValueError(f"unknown input kind {self.kind!r}")
        return converter.convert(samples, int(rate), name)


def _clean_id(text: str) -> str:
    return re.sub(r"\s+", "_", text.strip())


def _strip_audio_ext(rel: str) -> str:
    low = rel.lower()
    for ext in AUDIO_EXTENSIONS:
        if low.endswith(ext):
            return rel[:-len(ext)]
    return rel


def is_manifest(path: str) -> bool:
    return path.lower().endswith(MANIFEST_SUFFIXES)


def list_folder(folder: Path) -> List[AudioSource]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(AUDIO_EXTENSIONS))
    if not files:
        raise XasrError(f"{folder}: no audio files below it (extensions {' '.join(AUDIO_EXTENSIONS)})")
    return [AudioSource(id=_clean_id(_strip_audio_ext(p.relative_to(folder).as_posix())), kind="file", path=str(p))
            for p in files]


def read_wav_scp(path: Path) -> List[AudioSource]:
    """Kaldi ``wav.scp``: ``<id> <path>`` or ``<id> <command> |`` per line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise XasrError(f"{path}: cannot read the list ({e})") from None
    out: List[AudioSource] = []
    seen = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            raise XasrError(f"{path}:{n}: expected '<id> <path>' or '<id> <command> |', got {line.strip()!r}")
        uid, rest = parts[0], parts[1].strip()
        if uid in seen:
            raise XasrError(f"{path}:{n}: id {uid} already on line {seen[uid]}")
        seen[uid] = n
        if rest.endswith("|"):
            out.append(AudioSource(id=uid, kind="command", path=rest))
        elif re.search(r"\.(ark|scp):\d+$", rest) or rest.startswith(("ark:", "scp:")):
            out.append(AudioSource(id=uid, kind="file", path=rest,
                                   error=f"{path}:{n}: {rest}: Kaldi archive offsets are not supported; "
                                         f"give an audio file or a command ending in '|'"))
        else:
            out.append(AudioSource(id=uid, kind="file", path=rest))
    if not out:
        raise XasrError(f"{path}: the list is empty")
    return out


def read_lhotse_manifest(path: Path) -> List[AudioSource]:
    from lhotse import CutSet, RecordingSet
    from lhotse.serialization import load_manifest_lazy_or_eager

    try:
        manifest = load_manifest_lazy_or_eager(path)
    except Exception as e:
        raise XasrError(f"{path}: not a readable lhotse manifest ({str(e).strip()[:300]})") from None
    if isinstance(manifest, RecordingSet):  # one cut per recording, with the recording's id
        manifest = CutSet.from_cuts(r.to_cut() for r in manifest)
    if not isinstance(manifest, CutSet):
        raise XasrError(f"{path}: a {type(manifest).__name__}, not a cut or recording manifest")
    out = []
    for cut in manifest:
        src = None
        if cut.has_recording and cut.recording.sources:
            s = cut.recording.sources[0]
            src = s.source if s.type in ("file", "url", "command") else None
        err = None if cut.has_recording else f"{path}: cut {cut.id} has no audio recording"
        out.append(AudioSource(id=_clean_id(cut.id), kind="cut", path=src, payload=cut,
                               duration=float(cut.duration), error=err))
    if not out:
        raise XasrError(f"{path}: the manifest has no cuts")
    return out


def list_inputs(specs: Iterable[Any]) -> List[AudioSource]:
    """Expand input specifications into audio sources with unique ids (see the module doc)."""
    sources: List[AudioSource] = []
    n_arrays = 0
    for spec in specs:
        if isinstance(spec, (tuple, list)) and len(spec) == 2 and not isinstance(spec[0], (str, os.PathLike)):
            samples, rate = spec
            sources.append(AudioSource(id=f"array-{n_arrays}", kind="array", payload=(np.asarray(samples), int(rate)),
                                       duration=len(samples) / float(rate) if int(rate) > 0 else None))
            n_arrays += 1
            continue
        if isinstance(spec, np.ndarray) or not isinstance(spec, (str, os.PathLike)):
            raise XasrError(f"cannot transcribe a {type(spec).__name__}: give a path or a (samples, sample_rate) "
                            f"pair")
        p = Path(spec)
        name = str(spec)
        if p.is_dir():
            sources.extend(list_folder(p))
        elif name.endswith(".scp"):
            if not p.is_file():
                raise XasrError(f"{p}: no such list")
            sources.extend(read_wav_scp(p))
        elif is_manifest(name):
            if not p.is_file():
                raise XasrError(f"{p}: no such manifest")
            sources.extend(read_lhotse_manifest(p))
        else:
            sources.append(AudioSource(id=_clean_id(_strip_audio_ext(p.name)) or name, kind="file", path=name))
    return unique_ids(sources)


def unique_ids(sources: Sequence[AudioSource]) -> List[AudioSource]:
    seen = {}
    renamed = 0
    for s in sources:
        if s.id in seen:
            k = seen[s.id] + 1
            while f"{s.id}-{k}" in seen:
                k += 1
            seen[s.id] = k
            s.id = f"{s.id}-{k}"
            renamed += 1
        seen.setdefault(s.id, 1)
    if renamed:
        logger.warning("%d inputs share an id with an earlier one; they got -2, -3, ... appended", renamed)
    return list(sources)
