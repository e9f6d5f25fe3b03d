"""Corpus directory -> validated lhotse cut manifests, through lhotse's own recipes.

In: an Aishell-1 directory (holding ``data_aishell/``) or a LibriSpeech directory (holding
parts such as ``train-clean-100/``), real or synthesized by :mod:`xasr.corpora.synth`.
Out: ``<output_dir>/{corpus}_cuts_{split}.jsonl.gz`` per split (Aishell: train, dev, test;
LibriSpeech: one per part present, e.g. train-clean-100, dev-clean, test-clean). A synthesized
corpus may also hold a split of training voices reading unseen text (:mod:`xasr.corpora.synth`):
Aishell ``data_aishell/wav/test_seen/`` (read here the way lhotse reads the other splits),
LibriSpeech part ``test-seen/`` (read by lhotse's recipe like any part).

Before lhotse reads anything, the layout and every audio file are checked, so that a wrong
layout, a missing transcript, or an empty or unreadable audio file stops the run with an error
that names the file and the problem, instead of an exception deep inside lhotse. Utterances
that lhotse's recipes skip (audio without a transcript line) are skipped here too, with one
warning that counts them. Each manifest is written to a temporary file and renamed, so an
interrupted run never destroys a manifest that was already there.
"""
from __future__ import annotations

from xasr.errors import XasrError

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import soundfile as sf

logger = logging.getLogger(__name__)

AISHELL_SPLITS = ("train", "dev", "test")
AISHELL_EXTRA_SPLITS = ("test_seen",)  # optional, synthesized corpora only
LIBRISPEECH_PARTS = (
    "dev-clean", "dev-other", "test-clean", "test-other", "train-clean-100", "train-clean-360",
    "train-other-500", "dev-clean-2", "train-clean-5",
    "test-seen",  # optional, synthesized corpora only: training voices reading unseen text
)
MAX_LISTED = 20


class CorpusError(XasrError):
    """The corpus directory is not usable; the message names the file and the problem."""


@dataclass
class AudioProblem:
    path: str
    problem: str


def check_audio_file(path: Path) -> Optional[str]:
    """None if soundfile can read a non-empty signal from ``path``, else what is wrong."""
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        info = sf.info(str(path))
    except (RuntimeError, OSError, sf.LibsndfileError) as e:  # soundfile raises these
        return f"unreadable audio ({e})"
    if info.frames == 0:
        return "audio has no samples"
    return None


def check_audio_files(paths: Sequence[Path], num_jobs: int = 4) -> List[AudioProblem]:
    with ThreadPoolExecutor(max_workers=max(1, num_jobs)) as pool:
        results = list(pool.map(check_audio_file, paths, chunksize=64))
    return [AudioProblem(str(p), r) for p, r in zip(paths, results) if r is not None]


def _raise_problems(problems: List[AudioProblem], corpus_dir: Path) -> None:
    if not problems:
        return
    lines = [f"  {p.path}: {p.problem}" for p in problems[:MAX_LISTED]]
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    raise CorpusError(
        f"{len(problems)} audio file(s) in {corpus_dir} cannot be used:\n" + "\n".join(lines) + more
        + "\nRe-extract or remove them, then run this stage again."
    )


def _read_aishell_transcript(path: Path) -> Dict[str, str]:
    texts: Dict[str, str] = {}
    bad = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.strip().split(maxsplit=1)
            if not parts:
                continue
            if len(parts) < 2:
                bad.append(lineno)
                continue
            texts[parts[0]] = parts[1]
    if bad:
        logger.warning("%s: %d line(s) have an utterance id but no text (lines %s); lhotse skips them",
                       path, len(bad), ", ".join(map(str, bad[:10])))
    return texts


def check_aishell_layout(corpus_dir: Path, num_jobs: int = 4) -> Dict[str, int]:
    """Validate an Aishell-1 directory; returns the number of usable utterances per split."""
    root = corpus_dir / "data_aishell"
    if not root.is_dir():
        raise CorpusError(
            f"wrong layout: {root} does not exist. An Aishell-1 directory holds data_aishell/wav/"
            "{train,dev,test}/<SPK>/<UTTID>.wav and data_aishell/transcript/aishell_transcript_v0.8.txt"
        )
    transcript = root / "transcript" / "aishell_transcript_v0.8.txt"
    if not transcript.is_file():
        raise CorpusError(f"missing transcript: {transcript} does not exist")
    texts = _read_aishell_transcript(transcript)
    if not texts:
        raise CorpusError(f"empty transcript: {transcript} has no 'UTTID text' lines")
    counts = {}
    all_wavs: List[Path] = []
    no_text: List[str] = []
    extra = [x for x in AISHELL_EXTRA_SPLITS if (root / "wav" / x).is_dir()]
    for split in AISHELL_SPLITS + tuple(extra):
        d = root / "wav" / split
        wavs = sorted(d.glob("*/*.wav")) if d.is_dir() else []
        if not wavs:
            raise CorpusError(f"wrong layout: no wav files in {d}/<SPK>/ (every split needs at least one)")
        all_wavs.extend(wavs)
        with_text = [w for w in wavs if w.stem in texts]
        no_text.extend(str(w) for w in wavs if w.stem not in texts)
        counts[split] = len(with_text)
        if not with_text:
            raise CorpusError(f"no wav file in {d} has a line in {transcript}")
    if no_text:
        logger.warning("%d wav file(s) have no transcript line in %s and are skipped (as lhotse's "
                       "prepare_aishell does), e.g. %s", len(no_text), transcript, ", ".join(no_text[:3]))
    _raise_problems(check_audio_files(all_wavs, num_jobs), corpus_dir)
    return counts


def _aishell_extra_split(corpus_dir: Path, split: str):
    """Recordings and supervisions of an extra Aishell split, made as lhotse's prepare_aishell
    makes those of train/dev/test (ids, speaker from the folder, spaces removed from the text)."""
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet
    from lhotse.recipes.aishell import text_normalize

    texts = _read_aishell_transcript(corpus_dir / "data_aishell" / "transcript" / "aishell_transcript_v0.8.txt")
    recordings, supervisions = [], []
    for path in sorted((corpus_dir / "data_aishell" / "wav" / split).glob("*/*.wav")):
        if path.stem not in texts:
            continue
        rec = Recording.from_file(path)
        recordings.append(rec)
        supervisions.append(SupervisionSegment(
            id=path.stem, recording_id=path.stem, start=0.0, duration=rec.duration, channel=0,
            language="Chinese", speaker=path.parent.name,
            text=text_normalize(texts[path.stem]).strip().replace(" ", "")))
    return {"recordings": RecordingSet.from_recordings(recordings),
            "supervisions": SupervisionSet.from_segments(supervisions)}


def librispeech_parts(corpus_dir: Path) -> List[str]:
    return [p for p in LIBRISPEECH_PARTS if (corpus_dir / p).is_dir()]


def check_librispeech_layout(corpus_dir: Path, num_jobs: int = 4) -> Dict[str, int]:
    """Validate a LibriSpeech directory; returns the number of usable utterances per part."""
    parts = librispeech_parts(corpus_dir)
    if not parts:
        raise CorpusError(
            f"wrong layout: no LibriSpeech part in {corpus_dir} (expected one or more of "
            f"{', '.join(LIBRISPEECH_PARTS)}, each holding <spk>/<chapter>/<spk>-<chapter>-<NNNN>.flac)"
        )
    counts = {}
    all_audio: List[Path] = []
    for part in parts:
        n = 0
        chapters = sorted(p for p in (corpus_dir / part).glob("*/*") if p.is_dir())
        if not chapters:
            raise CorpusError(f"wrong layout: {corpus_dir / part} has no <spk>/<chapter>/ directories")
        for ch in chapters:
            trans = ch / f"{ch.parent.name}-{ch.name}.trans.txt"
            flacs = sorted(ch.glob("*.flac"))
            if not trans.is_file():
                if flacs:
                    logger.warning("missing transcript %s: its %d flac file(s) are skipped (as lhotse's "
                                   "prepare_librispeech does)", trans, len(flacs))
                continue
            for lineno, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
                parts_ = line.split(maxsplit=1)
                if not parts_:
                    continue
                audio = ch / f"{parts_[0]}.flac"
                if len(parts_) < 2:
                    logger.warning("%s line %d: utterance %s has no text", trans, lineno, parts_[0])
                if not audio.is_file():
                    logger.warning("%s line %d: no audio file %s; skipped (as lhotse does)", trans, lineno, audio)
                    continue
                all_audio.append(audio)
                n += 1
        if n == 0:
            raise CorpusError(f"{corpus_dir / part}: no utterance has both a transcript line and a flac file")
        counts[part] = n
    _raise_problems(check_audio_files(all_audio, num_jobs), corpus_dir)
    return counts


def _save_atomic(cuts, path: Path) -> None:
    tmp = path.with_name(path.name.replace(".jsonl.gz", ".partial.jsonl.gz"))
    cuts.to_file(tmp)
    os.replace(tmp, path)


def prepare_manifests(corpus: str, corpus_dir: str, output_dir: str, num_jobs: int = 2
                      ) -> Dict[str, Path]:
    """Check the corpus, run lhotse's recipe, validate, and save one cut set per split."""
    from lhotse import CutSet, fix_manifests, validate_recordings_and_supervisions
    from lhotse.recipes import prepare_aishell, prepare_librispeech

    cdir = Path(corpus_dir)
    if not cdir.is_dir():
        raise CorpusError(f"corpus directory {cdir} does not exist")
    if corpus == "aishell":
        expected = check_aishell_layout(cdir, num_jobs=max(4, num_jobs))
        manifests = dict(prepare_aishell(cdir, output_dir=None))
        for split in expected:
            if split not in AISHELL_SPLITS:
                manifests[split] = _aishell_extra_split(cdir, split)
    elif corpus == "librispeech":
        expected = check_librispeech_layout(cdir, num_jobs=max(4, num_jobs))
        manifests = prepare_librispeech(cdir, dataset_parts=list(expected), output_dir=None,
                                        num_jobs=num_jobs)
    else:
        raise ValueError(f"unknown corpus {corpus!r}")

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, m in sorted(manifests.items()):
        recordings, supervisions = fix_manifests(m["recordings"], m["supervisions"])
        validate_recordings_and_supervisions(recordings, supervisions)
        cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
        if len(cuts) == 0:
            raise CorpusError(f"{corpus} {split}: lhotse produced no cut from {cdir}")
        if len(cuts) != expected.get(split, len(cuts)):
            logger.warning("%s %s: %d cuts, while %d utterances had audio and text", corpus, split,
                           len(cuts), expected[split])
        path = out / f"{corpus}_cuts_{split}.jsonl.gz"
        _save_atomic(cuts, path)
        hours = sum(c.duration for c in cuts) / 3600
        logger.info("%s: %d cuts, %.2f h, %d speakers", path, len(cuts), hours,
                    len({s.speaker for c in cuts for s in c.supervisions}))
        written[split] = path
    return written


def download_corpus(corpus: str, target_dir: str) -> Path:
    """Fetch the real corpus with lhotse's downloader (needs network access to openslr.org)."""
    from lhotse.recipes import download_aishell, download_librispeech

    if corpus == "aishell":
        return Path(download_aishell(target_dir))
    return Path(download_librispeech(target_dir, dataset_parts="librispeech"))
