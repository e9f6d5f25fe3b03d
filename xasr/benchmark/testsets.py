"""Test sets for benchmarks: lhotse cut manifests or Kaldi data directories, with their references,
scoring normalizer and language.

In: ``NAME=PATH`` where PATH is a cut manifest (``*.jsonl.gz``; features optional, audio
required) or a Kaldi data directory (``wav.scp`` + ``text``, optional ``segments``); the
normalizer (``auto``: from the supervisions' language) and the language (default: from the
normalizer, else from the supervisions). Out: a :class:`TestSet` with eager 16 kHz cuts and
``{cut id: reference text}``.

Kaldi ``wav.scp`` entries may be file paths or commands ending in ``|`` (run by a shell; their
output must be audio that soundfile reads). Utterances with audio but no ``text`` line are
skipped with a warning, as the recipes do; a ``text`` line without audio is an error.
"""
from __future__ import annotations

import io
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from xasr.errors import XasrError
from xasr.scoring.normalize import NormalizerError, get_normalizer, normalizer_for_language
from xasr.scoring.wer import ScoringError, read_kaldi_text
from xasr.utils.named import parse_named

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000

# language names found in lhotse supervisions -> language codes
_LANGUAGE_NAMES = {"english": "en", "en": "en", "eng": "en", "chinese": "zh", "mandarin": "zh", "zh": "zh",
                   "cmn": "zh", "zh-cn": "zh"}
# normalizer -> the language it scores
_NORMALIZER_LANGUAGE = {"chinese_char": "zh", "english_word": "en"}


class TestSetError(XasrError):
    """A test set cannot be read or scored as asked."""

    __test__ = False  # not a pytest test class


@dataclass
class TestSet:
    __test__ = False  # not a pytest test class

    name: str
    path: str
    source: str  # "cuts" or "kaldi"
    cuts: object  # an eager lhotse CutSet
    refs: Dict[str, str]
    normalizer: str
    unit: str  # "WER" or "CER"
    language: str  # "en", "zh", ...
    how: str  # how the normalizer and language were chosen

    @property
    def num_utts(self) -> int:
        return len(self.refs)

    @property
    def audio_seconds(self) -> float:
        return float(sum(c.duration for c in self.cuts))

    def info(self) -> Dict[str, object]:
        return {"name": self.name, "path": self.path, "source": self.source, "num_utts": self.num_utts,
                "audio_seconds": round(self.audio_seconds, 3), "normalizer": self.normalizer, "unit": self.unit,
                "language": self.language, "chosen": self.how}


def per_set_values(items: Sequence[str], set_names: Sequence[str], what: str,
                   default: Optional[str]) -> Dict[str, Optional[str]]:
    """One value for every set (``["chinese_char"]``) or ``NAME=VALUE`` items (others: ``default``)."""
    if len(items) == 1 and "=" not in items[0]:
        return {s: items[0] for s in set_names}
    named = parse_named(items, what)
    unknown = sorted(set(named) - set(set_names))
    if unknown:
        raise TestSetError(f"{what} names unknown test set(s) {', '.join(unknown)}; the sets are "
                           f"{', '.join(set_names)}")
    return {s: named.get(s, default) for s in set_names}


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

def _read_table(path: Path, min_fields: int = 2) -> List[List[str]]:
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=min_fields - 1) if min_fields == 2 else line.split()
        if len(parts) < min_fields:
            raise TestSetError(f"{path}:{lineno}: expected at least {min_fields} fields, got {line!r}")
        rows.append(parts)
    return rows


def _recording(rec_id: str, entry: str, where: str):
    from lhotse import Recording
    from lhotse.audio import AudioSource

    entry = entry.strip()
    if entry.endswith("|"):
        import soundfile as sf

        cmd = entry[:-1].strip()
        proc = subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if proc.returncode != 0:
            raise TestSetError(f"{where}: the command for {rec_id} failed (exit {proc.returncode}): "
                               f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
        try:
            info = sf.info(io.BytesIO(proc.stdout))
        except Exception as e:  # soundfile raises its own error types
            raise TestSetError(f"{where}: the output of the command for {rec_id} is not audio ({e})") from None
        return Recording(id=rec_id, sources=[AudioSource(type="command", channels=[0], source=cmd)],
                         sampling_rate=int(info.samplerate), num_samples=int(info.frames),
                         duration=info.frames / info.samplerate)
    path = Path(entry)
    if not path.is_file():
        raise TestSetError(f"{where}: audio file {path} of {rec_id} does not exist")
    try:
        return Recording.from_file(path, recording_id=rec_id)
    except Exception as e:
        raise TestSetError(f"{where}: cannot read audio {path} of {rec_id} ({e})") from None


def load_kaldi_dir(path: str):
    """A Kaldi data directory -> an eager CutSet with one supervision (the ``text``) per cut."""
    from lhotse import CutSet, MonoCut, SupervisionSegment

    d = Path(path)
    for f in ("wav.scp", "text"):
        if not (d / f).is_file():
            raise TestSetError(f"{d} is not a Kaldi data directory: {f} is missing")
    wav = {r[0]: r[1] for r in _read_table(d / "wav.scp")}
    try:
        texts = read_kaldi_text(d / "text")
    except ScoringError as e:
        raise TestSetError(str(e)) from None
    segments = None
    if (d / "segments").is_file():
        segments = {}
        for row in _read_table(d / "segments", min_fields=4):
            try:
                segments[row[0]] = (row[1], float(row[2]), float(row[3]))
            except ValueError:
                raise TestSetError(f"{d / 'segments'}: bad times in line {' '.join(row)!r}") from None
    utt_audio = {u: s[0] for u, s in segments.items()} if segments is not None else {u: u for u in wav}
    no_audio = sorted(u for u in texts if u not in utt_audio or utt_audio[u] not in wav)
    if no_audio:
        raise TestSetError(f"{d / 'text'}: {len(no_audio)} utterance(s) have no audio in wav.scp"
                           + (" / segments" if segments is not None else "") + f": {', '.join(no_audio[:5])}")
    no_text = sorted(u for u in utt_audio if u not in texts)
    if no_text:
        logger.warning("%s: %d utterance(s) have audio but no line in text and are skipped: %s", d, len(no_text),
                       ", ".join(no_text[:5]))
    recordings = {}
    cuts = []
    for utt in sorted(texts):
        rec_id = utt_audio[utt]
        if rec_id not in recordings:
            recordings[rec_id] = _recording(rec_id, wav[rec_id], str(d / "wav.scp"))
        rec = recordings[rec_id]
        if segments is not None:
            _, start, end = segments[utt]
            if end <= start or end > rec.duration + 0.01:
                raise TestSetError(f"{d / 'segments'}: {utt} spans {start}-{end} s, outside its recording "
                                   f"{rec_id} ({rec.duration:.2f} s)")
            end = min(end, rec.duration)
        else:
            start, end = 0.0, rec.duration
        cut = MonoCut(id=utt, start=start, duration=round(end - start, 6), channel=0, recording=rec,
                      supervisions=[SupervisionSegment(id=utt, recording_id=rec_id, start=0.0,
                                                       duration=round(end - start, 6), channel=0, text=texts[utt])])
        cuts.append(cut)
    if not cuts:
        raise TestSetError(f"{d}: no utterance with both audio and text")
    return CutSet.from_cuts(cuts)


def _check_audio_files(cuts, name: str, path: str) -> None:
    for c in cuts:
        if not c.has_recording:
            raise TestSetError(f"test set {name} ({path}): cut {c.id} has no recording; benchmarks decode audio")
        for src in c.recording.sources:
            if src.type == "file" and not Path(src.source).is_file():
                raise TestSetError(
                    f"test set {name} ({path}): audio {src.source} of cut {c.id} does not exist (paths in a "
                    f"manifest are relative to the directory it was made in: run from there)")


def _supervision_language(cuts, name: str) -> Optional[str]:
    langs = {(s.language or "").strip() for c in cuts for s in c.supervisions}
    langs.discard("")
    if not langs:
        return None
    codes = {_LANGUAGE_NAMES.get(lang.lower(), lang.lower()) for lang in langs}
    if len(codes) > 1:
        raise TestSetError(f"test set {name} mixes languages {sorted(langs)}: give --normalizer and --language")
    return codes.pop()


def load_test_set(name: str, path: str, normalizer: Optional[str] = "auto", language: Optional[str] = None,
                  max_utts: Optional[int] = None) -> TestSet:
    """Read a test set and settle how it is scored (see the module docstring)."""
    from lhotse import CutSet

    from xasr.data.dataset import batch_texts

    p = Path(path)
    if p.is_dir():
        cuts, source = load_kaldi_dir(path), "kaldi"
    elif p.is_file():
        try:
            cuts = CutSet.from_file(p).to_eager()
        except Exception as e:
            raise TestSetError(f"test set {name}: cannot read the cut manifest {p} ({e})") from None
        source = "cuts"
    else:
        raise TestSetError(f"test set {name}: {p} is neither a cut manifest nor a Kaldi data directory")
    if max_utts:
        cuts = cuts.subset(first=max_utts).to_eager()
    if len(cuts) == 0:
        raise TestSetError(f"test set {name} ({p}) has no cuts")
    _check_audio_files(cuts, name, path)
    if any(c.sampling_rate != SAMPLE_RATE for c in cuts):
        logger.info("test set %s: resampling to %d Hz", name, SAMPLE_RATE)
        cuts = cuts.resample(SAMPLE_RATE).to_eager()
    ids = [c.id for c in cuts]
    if len(set(ids)) != len(ids):
        raise TestSetError(f"test set {name} ({p}) has repeated cut ids")
    refs = dict(zip(ids, batch_texts(cuts)))

    sup_lang = _supervision_language(cuts, name)
    how = []
    if not normalizer or normalizer == "auto":
        if sup_lang is None:
            raise TestSetError(f"test set {name} ({p}): its supervisions name no language, so the normalizer "
                               "cannot be chosen: give --normalizer (chinese_char, english_word or none)")
        try:
            normalizer = normalizer_for_language(sup_lang)
        except NormalizerError as e:
            raise TestSetError(f"test set {name}: {e}") from None
        how.append(f"normalizer from the supervisions' language ({sup_lang})")
    else:
        how.append("normalizer given")
    try:
        norm = get_normalizer(normalizer)
    except NormalizerError as e:
        raise TestSetError(f"test set {name}: {e}") from None
    if language:
        how.append("language given")
    elif norm.name in _NORMALIZER_LANGUAGE:
        language = _NORMALIZER_LANGUAGE[norm.name]
        how.append("language from the normalizer")
    elif sup_lang:
        language = sup_lang
        how.append("language from the supervisions")
    else:
        raise TestSetError(f"test set {name} ({p}): cannot tell its language: give --language {name}=CODE")
    return TestSet(name=name, path=str(path), source=source, cuts=cuts, refs=refs, normalizer=norm.name,
                   unit=norm.unit, language=language, how="; ".join(how))
