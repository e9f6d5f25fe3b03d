"""Synthesize a small speech corpus in the exact Aishell-1 or LibriSpeech release layout.

In: a corpus name ("aishell" or "librispeech"), an output directory, hours per split, a seed.
Out: a directory that lhotse's own ``prepare_aishell`` / ``prepare_librispeech`` read unchanged:

  aishell:      OUT/data_aishell/wav/{train,dev,test}/<SPK>/BAC009<SPK>W<NNNN>.wav
                OUT/data_aishell/transcript/aishell_transcript_v0.8.txt
  librispeech:  OUT/{train-clean-100,dev-clean,test-clean}/<spk>/<chapter>/<spk>-<chapter>-<NNNN>.flac
                OUT/<part>/<spk>/<chapter>/<spk>-<chapter>.trans.txt, OUT/SPEAKERS.TXT

plus ``OUT/synthesis.json`` recording the seed, every speaker's voice and the measured hours,
``OUT/lm-text.txt``, the language-model text (every source sentence that no dev, test or seen
utterance reads, one per line, as LibriSpeech's separate LM corpus is for the real one), and, when the sizes ask for a ``seen`` split (``default_sizes`` does), a fourth set of
*training voices reading unseen text* in the same layout: ``data_aishell/wav/test_seen/`` (its
lines in the same transcript file) or the part ``test-seen/``. It separates how well a model
generalizes to new voices (test) from how well it handles new text (seen).

The dev and test sets depend only on the seed and their own sizes: their voices, speakers and
sentences are drawn first, each split from its own random stream, so changing the training hours
or speakers leaves them exactly as they were.

Speech comes from the offline TTS engines (:mod:`xasr.corpora.tts`) with a voice, rate, pitch and
recording level per speaker; text from real sentences (:mod:`xasr.corpora.text_sources`), never
repeated across splits. Speakers are disjoint between splits and so are the engine voices
("timbres"): the test speakers sound unlike any training speaker. The result depends only on
the seed and the sizes, not on the number of parallel jobs.
"""
from __future__ import annotations

from xasr.errors import XasrError

import json
import logging
import os
import random
import shutil
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from xasr.corpora.text_sources import Sentence, chinese_sentences, english_sentences
from xasr.corpora.tts import TARGET_SAMPLE_RATE, Voice, check_engine, synthesize
from xasr.utils.progress import progress

logger = logging.getLogger(__name__)

CORPORA = ("aishell", "librispeech")
SPLITS = ("train", "dev", "test")
SEEN = "seen"  # training voices reading unseen text (optional, see default_sizes)
LIBRISPEECH_PARTS = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean", SEEN: "test-seen"}
AISHELL_DIRS = {"train": "train", "dev": "dev", "test": "test", SEEN: "test_seen"}
AISHELL_TRANSCRIPT = "data_aishell/transcript/aishell_transcript_v0.8.txt"
LM_TEXT = "lm-text.txt"  # at the corpus root: source sentences no dev, test or seen utterance reads
# First speaker number of each split, as in the Aishell-1 release (S0002.., S0724.., S0764..).
AISHELL_FIRST_SPEAKER = {"train": 2, "dev": 724, "test": 764}

# espeak-ng voice variants that sound like plausible speakers (robots, whispers and
# novelty voices left out). They are split between train/dev/test so that no test
# speaker shares a variant with a training speaker.
ESPEAK_VARIANTS = (
    "m1 m2 m3 m4 m5 m6 m7 m8 f1 f2 f3 f4 f5 klatt klatt2 klatt3 klatt4 adam Alex Andy Annie "
    "aunty belinda benjamin boris caleb david ed edward edward2 Gene grandma grandpa iven iven2 "
    "iven3 john linda max Michael Mike norbert paul pedro quincy rob robert sandro shelby steph "
    "steph2 steph3 travis victor zac Lee Marco Mario Hugo Denis Diogo Henrique Jacky anika antonio "
    "gustave marcelo michel miguel pablo Nguyen Alicia Andrea"
).split()
FEMALE_VARIANTS = {"f1", "f2", "f3", "f4", "f5", "Annie", "aunty", "belinda", "grandma", "linda",
                   "shelby", "steph", "steph2", "steph3", "anika", "Alicia", "Andrea", "slt"}
ENGLISH_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                   "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
MANDARIN_VOICE = "cmn-latn-pinyin"
# Whole voices of the other English engines, each owned by one split.
ENGLISH_OTHER_VOICES = {
    "train": (("flite", "kal16"), ("flite", "slt"), ("festival", "kal_diphone"),
              ("festival", "cmu_us_slt_arctic_hts")),
    "dev": (("flite", "awb"),),
    "test": (("flite", "rms"), ("festival", "ked_diphone")),
}
# Share of English speakers that use flite / festival voices (the rest use espeak-ng).
ENGLISH_OTHER_SHARE = 0.35
# Seconds of speech per Mandarin character / English word at rate 1.0 (measured on the engines),
# used to plan how many sentences fill the requested hours.
SECONDS_PER_UNIT = {"aishell": 0.275, "librispeech": 0.30}
# Bounds on utterance length in text units (characters / words).
TEXT_LENGTH = {"aishell": (6, 20), "librispeech": (4, 22)}


class SynthesisError(XasrError):
    pass


@dataclass
class SplitSize:
    hours: float
    speakers: int


@dataclass
class SynthConfig:
    corpus: str
    out_dir: str
    seed: int = 0
    sizes: Dict[str, SplitSize] = field(default_factory=dict)
    jobs: int = 2
    snr_db: Tuple[float, float] = (20.0, 40.0)  # background noise per utterance; None: none
    max_utts_per_job: int = 25
    # aishell: sentences only with the N most frequent characters of the source; None: every usable
    # sentence (13,580 sentences, 4,181 characters), so held-out text is not limited to a small inventory
    zh_max_vocab: Optional[int] = None
    train_acoustics: Optional[TrainAcoustics] = None  # more variety in train only (see TrainAcoustics)


# Fixed evaluation sets: about 300 utterances each for dev and test (a 95% bootstrap interval of
# roughly +-2 points at 40% error), whatever the training size; the seen-voice split is smaller.
EVAL_HOURS = 0.3
EVAL_SPEAKERS = 20
SEEN_HOURS = 0.1
SEEN_SPEAKERS = 10


def default_sizes(corpus: str, train_hours: float = 1.0, eval_hours: float = EVAL_HOURS,
                  seen_hours: float = SEEN_HOURS) -> Dict[str, SplitSize]:
    """Split sizes: training speakers scale with the hours (30 per hour); dev and test are fixed
    (``eval_hours`` and 20 speakers each); ``seen`` takes up to 10 training speakers (0: no
    seen split)."""
    train_speakers = max(4, int(round(train_hours * 30)))
    sizes = {
        "train": SplitSize(train_hours, train_speakers),
        "dev": SplitSize(eval_hours, EVAL_SPEAKERS),
        "test": SplitSize(eval_hours, EVAL_SPEAKERS),
    }
    if seen_hours > 0:
        sizes[SEEN] = SplitSize(seen_hours, min(SEEN_SPEAKERS, train_speakers))
    return sizes


@dataclass
class Speaker:
    id: str
    split: str
    voice: Voice
    level: float  # peak amplitude of the speaker's recordings
    gender: str


@dataclass
class Utterance:
    id: str
    speaker: str
    split: str
    path: str  # relative to the corpus root
    sentence: Sentence


def split_variants(seed: int) -> Dict[str, List[str]]:
    rng = random.Random(f"variants-{seed}")
    variants = list(ESPEAK_VARIANTS)
    rng.shuffle(variants)
    n = len(variants)
    n_dev = n_test = max(2, n * 15 // 100)
    return {
        "test": variants[:n_test],
        "dev": variants[n_test:n_test + n_dev],
        "train": variants[n_test + n_dev:],
    }


def make_voices(corpus: str, split: str, count: int, rng: random.Random,
                 variants: Sequence[str]) -> List[Voice]:
    """``count`` voices for a split: distinct timbre/rate/pitch per speaker."""
    if corpus == "aishell":
        timbres = [("espeak", f"{MANDARIN_VOICE}+{v}") for v in variants]
    else:
        timbres = [("espeak", f"{a}+{v}") for a in ENGLISH_ACCENTS for v in variants]
    rng.shuffle(timbres)
    others = list(ENGLISH_OTHER_VOICES[split]) if corpus == "librispeech" else []
    voices = []
    n_other = int(round(count * ENGLISH_OTHER_SHARE)) if others else 0
    for i in range(count):
        if i < n_other:
            engine, name = others[i % len(others)]
        else:
            engine, name = timbres[(i - n_other) % len(timbres)]
        voices.append(Voice(engine, name, rate=round(rng.uniform(0.85, 1.15), 3),
                            pitch=round(rng.uniform(0.3, 0.7), 3)))
    rng.shuffle(voices)
    return voices


def _gender(voice: Voice) -> str:
    variant = voice.name.split("+")[-1]
    return "F" if variant in FEMALE_VARIANTS else "M"


def _split_rng(seed: int, split: str) -> random.Random:
    """The random stream of one split: what a split draws never shifts another split's draws."""
    return random.Random(f"{seed}-{split}")


def plan_corpus(cfg: SynthConfig, sentences: Sequence[Sentence]) -> Tuple[List[Speaker], List[Utterance]]:
    """Decide speakers, voices and the text of every utterance (no audio yet).

    The dev and test sentences are dealt first, from the end of a shuffled order, and are never
    read in train; so are the seen split's (after test). Train takes the others from the start;
    when it needs more hours than they hold, it reads them again with other voices (a second
    reading of a prompt, as in corpora where several speakers read the same prompts), so dev,
    test and seen text stays unseen. Each split draws its voices, speakers and layout from its
    own random stream (:func:`_split_rng`), dev and test before train, so they depend only on the
    seed and their own sizes. The seen split's speakers are the first training speakers, with
    their voices: training voices reading unseen text.
    """
    rng = random.Random(cfg.seed)
    order = list(range(len(sentences)))
    rng.shuffle(order)
    variants = split_variants(cfg.seed)
    for split in SPLITS:
        size = cfg.sizes.get(split)
        if size is None or size.speakers < 1 or size.hours <= 0:
            raise SynthesisError(f"split {split}: needs at least one speaker and some hours, got {size}")
    seen = cfg.sizes.get(SEEN)
    if seen is not None and (seen.speakers < 1 or seen.hours <= 0):
        raise SynthesisError(f"split {SEEN}: needs at least one speaker and some hours, got {seen}")
    speakers: Dict[str, List[Speaker]] = {}
    used_ids = set()
    for split in ("dev", "test", "train"):
        srng = _split_rng(cfg.seed, split)
        size = cfg.sizes[split]
        voices = make_voices(cfg.corpus, split, size.speakers, srng, variants[split])
        split_speakers = []
        for i, voice in enumerate(voices):
            if cfg.corpus == "aishell":
                sid = f"S{AISHELL_FIRST_SPEAKER[split] + i:04d}"
            else:
                sid = str(srng.randrange(10, 9999))
                while sid in used_ids:
                    sid = str(srng.randrange(10, 9999))
            used_ids.add(sid)
            split_speakers.append(Speaker(sid, split, voice, level=round(srng.uniform(0.25, 0.9), 3),
                                          gender=_gender(voice)))
        speakers[split] = split_speakers
    if seen is not None:
        if seen.speakers > len(speakers["train"]):
            raise SynthesisError(f"split {SEEN}: {seen.speakers} speakers asked for, train has only "
                                 f"{len(speakers['train'])}")
        speakers[SEEN] = [Speaker(s.id, SEEN, s.voice, s.level, s.gender) for s in speakers["train"][:seen.speakers]]

    def deal(split: str, picks: Iterator[int]) -> Dict[str, List[Sentence]]:
        """Fill the split's hours with sentences, dealt to its speakers in turn."""
        split_speakers = speakers[split]
        budget = cfg.sizes[split].hours * 3600.0
        per_speaker: Dict[str, List[Sentence]] = {s.id: [] for s in split_speakers}
        i = 0
        while budget > 0:
            k = next(picks, None)
            if k is None:
                raise SynthesisError(f"not enough distinct sentences ({len(sentences)}) for the requested "
                                     f"hours: the {split} set needs more")
            spk = split_speakers[i % len(split_speakers)]
            sent = sentences[order[k]]
            per_speaker[spk.id].append(sent)
            units = len(sent.transcript) if cfg.corpus == "aishell" else len(sent.transcript.split())
            budget -= SECONDS_PER_UNIT[cfg.corpus] * units / spk.voice.rate + 0.5
            i += 1
        return per_speaker

    held_out = ["dev", "test"] + ([SEEN] if seen is not None else [])
    dealt: Dict[str, Dict[str, List[Sentence]]] = {}
    from_end = iter(range(len(order) - 1, -1, -1))
    for split in held_out:
        dealt[split] = deal(split, from_end)
    n_eval = sum(len(v) for d in dealt.values() for v in d.values())
    n_free = len(order) - n_eval
    # train: the remaining sentences in order, again from the first when they run out
    dealt["train"] = deal("train", (k % n_free for k in range(10 * n_free)) if n_free > 0 else iter(()))
    n_train = sum(len(v) for v in dealt["train"].values())
    if n_train > n_free:
        logger.info("train: %d utterances of %d distinct sentences (%.2f readings each)",
                    n_train, n_free, n_train / n_free)
    utterances: List[Utterance] = []
    all_splits = list(SPLITS) + ([SEEN] if seen is not None else [])
    for split in all_splits:
        lrng = _split_rng(cfg.seed, f"layout-{split}")
        for spk in speakers[split]:
            utterances.extend(_layout_speaker(cfg, spk, dealt[split][spk.id], lrng))
    return [s for split in all_splits for s in speakers[split]], utterances


def _layout_speaker(cfg: SynthConfig, spk: Speaker, sents: List[Sentence], rng: random.Random
                    ) -> List[Utterance]:
    out = []
    if cfg.corpus == "aishell":
        # a seen-split speaker also has training utterances (numbered from below 100 + their count)
        first = 5000 + rng.randrange(1, 100) if spk.split == SEEN else rng.randrange(1, 100)
        for k, s in enumerate(sents):
            uid = f"BAC009{spk.id}W{first + k:04d}"
            out.append(Utterance(uid, spk.id, spk.split,
                                 f"data_aishell/wav/{AISHELL_DIRS[spk.split]}/{spk.id}/{uid}.wav", s))
        return out
    part = LIBRISPEECH_PARTS[spk.split]
    n_chapters = 1 if len(sents) <= 15 else 2
    # the seen split's chapters are numbered apart from the training chapters of the same speaker
    lo, hi = (300000, 400000) if spk.split == SEEN else (1000, 300000)
    chapters = [str(rng.randrange(lo, hi)) for _ in range(n_chapters)]
    count = {c: 0 for c in chapters}
    for k, s in enumerate(sents):
        chapter = chapters[k * n_chapters // len(sents)]
        uid = f"{spk.id}-{chapter}-{count[chapter]:04d}"
        count[chapter] += 1
        out.append(Utterance(uid, spk.id, spk.split, f"{part}/{spk.id}/{chapter}/{uid}.flac", s))
    return out


def room_impulse_response(rt60: float, rng: np.random.Generator, sample_rate: int = TARGET_SAMPLE_RATE
                          ) -> np.ndarray:
    """A simulated room impulse response: the direct path, then a diffuse tail of Gaussian noise
    whose energy decays by 60 dB over ``rt60`` seconds (the exponential-decay model of
    Schroeder's diffuse field), starting 2-5 ms after the direct sound. Unit peak."""
    n = max(1, int(rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # amplitude: -60 dB at rt60
    gap = int(rng.uniform(0.002, 0.005) * sample_rate)
    tail[:gap] = 0.0
    tail *= rng.uniform(0.3, 0.7) / (np.sqrt(np.sum(tail**2)) + 1e-12)  # direct-to-reverberant ratio ~3-10 dB
    tail[0] = 1.0
    return (tail / np.max(np.abs(tail))).astype(np.float32)


def telephone_band(audio: np.ndarray, sample_rate: int = TARGET_SAMPLE_RATE) -> np.ndarray:
    """Narrow-band telephone speech: 300-3400 Hz (4th-order Butterworth band-pass)."""
    from scipy.signal import butter, sosfilt

    sos = butter(4, [300.0, 3400.0], btype="bandpass", fs=sample_rate, output="sos")
    return sosfilt(sos, audio).astype(np.float32)


@dataclass
class TrainAcoustics:
    """Extra acoustic variety for the training split only (dev, test and seen keep the plain
    condition, so they stay fixed while this changes): a wider background-noise SNR range, a
    share of utterances in a simulated room, a share band-limited to the telephone band."""
    snr_db: Optional[Tuple[float, float]] = None  # None: SynthConfig.snr_db, as for the other splits
    reverb_share: float = 0.0
    rt60: Tuple[float, float] = (0.2, 0.8)  # seconds
    telephone_share: float = 0.0


def _finish_audio(audio: np.ndarray, uid: str, seed: int, level: float,
                  snr_db: Optional[Tuple[float, float]], acoustics: Optional[TrainAcoustics] = None) -> np.ndarray:
    """Recording level, room (with ``acoustics``), a little leading/trailing silence, background
    noise, telephone band (with ``acoustics``)."""
    rng = np.random.default_rng([seed, zlib.crc32(uid.encode())])
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 0:
        audio = audio * (level / peak)
    # the room and the telephone band draw from a stream of their own: the plain condition's
    # draws (silence, noise) are the same with and without them
    arng = np.random.default_rng([seed, zlib.crc32(uid.encode()), 7])
    room, phone = arng.uniform(size=2)
    if acoustics is not None and room < acoustics.reverb_share:
        from scipy.signal import fftconvolve

        rt60 = arng.uniform(*acoustics.rt60)
        wet = fftconvolve(audio, room_impulse_response(rt60, arng))[:audio.size]
        audio = wet * (level / (float(np.max(np.abs(wet))) + 1e-12))
    pad = lambda: np.zeros(int(rng.uniform(0.05, 0.3) * TARGET_SAMPLE_RATE), np.float32)  # noqa: E731
    audio = np.concatenate([pad(), audio, pad()]).astype(np.float32)
    if acoustics is not None and acoustics.snr_db is not None:
        snr_db = acoustics.snr_db
    if snr_db is not None:
        speech_power = float(np.mean(audio**2)) + 1e-12
        snr = rng.uniform(*snr_db)
        noise = rng.standard_normal(audio.size).astype(np.float32)
        # pink-ish noise: a running mean colours white noise toward low frequencies
        noise = np.convolve(noise, np.ones(4, np.float32) / 4, mode="same")
        noise *= np.sqrt(speech_power / (10 ** (snr / 10)) / (float(np.mean(noise**2)) + 1e-12))
        audio = audio + noise
    if acoustics is not None and phone < acoustics.telephone_share:
        audio = telephone_band(audio)
        audio *= level / (float(np.max(np.abs(audio))) + 1e-12)
    return np.clip(audio, -1.0, 1.0)


def _synthesize_job(job: Tuple[Speaker, List[Utterance], str, int, Optional[Tuple[float, float]],
                               Optional[TrainAcoustics]]) -> List[Tuple[str, float]]:
    spk, utts, root, seed, snr_db, acoustics = job
    wavs = synthesize(spk.voice, [u.sentence.spoken for u in utts])
    out = []
    for u, audio in zip(utts, wavs):
        if audio.size < TARGET_SAMPLE_RATE // 10:
            raise SynthesisError(f"{spk.voice.timbre} produced no speech for {u.id}: {u.sentence.spoken!r}")
        audio = _finish_audio(audio, u.id, seed, spk.level, snr_db, acoustics if spk.split == "train" else None)
        path = Path(root) / u.path
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio, TARGET_SAMPLE_RATE, subtype="PCM_16",
                 format="FLAC" if path.suffix == ".flac" else "WAV")
        out.append((u.id, audio.size / TARGET_SAMPLE_RATE))
    return out


def _write_texts(cfg: SynthConfig, root: Path, speakers: List[Speaker], utts: List[Utterance],
                 durations: Dict[str, float]) -> None:
    if cfg.corpus == "aishell":
        path = root / AISHELL_TRANSCRIPT
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{u.id} {u.sentence.transcript}\n" for u in sorted(utts, key=lambda u: u.id)),
                        encoding="utf-8")
        return
    by_chapter: Dict[Path, List[Utterance]] = {}
    for u in utts:
        p = root / u.path
        by_chapter.setdefault(p.parent / ("-".join(u.id.split("-")[:2]) + ".trans.txt"), []).append(u)
    for path, us in by_chapter.items():
        path.write_text("".join(f"{u.id} {u.sentence.transcript}\n" for u in sorted(us, key=lambda u: u.id)),
                        encoding="utf-8")
    minutes: Dict[str, float] = {}
    for u in utts:
        if u.split != SEEN:  # a seen-split speaker is listed once, with its training part
            minutes[u.speaker] = minutes.get(u.speaker, 0.0) + durations[u.id] / 60
    lines = [";ID  |SEX| SUBSET           |MINUTES| NAME\n"]
    # a speaker left without utterances (tiny sizes) is not listed, as in the release
    for s in sorted((s for s in speakers if s.split != SEEN and s.id in minutes), key=lambda s: int(s.id)):
        lines.append(f"{s.id:<5}| {s.gender} | {LIBRISPEECH_PARTS[s.split]:<17}| {minutes[s.id]:5.2f} | "
                     f"{s.voice.engine} {s.voice.name}\n")
    (root / "SPEAKERS.TXT").write_text("".join(lines), encoding="utf-8")


def partial_dir(out: Path) -> Path:
    """``<out>.partial``, empty: where a corpus is built before it is moved to ``out`` whole."""
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def speaker_jobs(speakers: Sequence, utts: Sequence, per_job: int,
                 by_split: bool = False) -> List[Tuple[object, list]]:
    """TTS jobs: (speaker, at most ``per_job`` of its utterances); a speaker's utterances are
    those whose ``speaker`` is its ``id`` (and, ``by_split``, whose ``split`` is its split).
    Festival voices first (their jobs are the slowest, so the pool ends together), then larger
    jobs first."""
    by_speaker: Dict[tuple, list] = {}
    for u in utts:
        by_speaker.setdefault((u.split if by_split else None, u.speaker), []).append(u)
    jobs = []
    for spk in speakers:
        us = by_speaker.get((spk.split if by_split else None, spk.id), [])
        jobs += [(spk, us[i:i + per_job]) for i in range(0, len(us), per_job)]
    jobs.sort(key=lambda j: (j[0].voice.engine != "festival", -len(j[1])))
    return jobs


def synthesize_corpus(cfg: SynthConfig) -> dict:
    """Write the corpus to ``cfg.out_dir`` and return a summary (hours, speed, size).

    The corpus is built in ``<out_dir>.partial`` and moved into place when complete, so an
    interrupted run never leaves something that looks finished. An existing ``out_dir`` is
    refused rather than overwritten.
    """
    if cfg.corpus not in CORPORA:
        raise SynthesisError(f"unknown corpus {cfg.corpus!r}; choose one of {CORPORA}")
    out = Path(cfg.out_dir)
    if out.exists():
        raise SynthesisError(f"{out} already exists; remove it or choose another directory")
    if not cfg.sizes:
        cfg.sizes = default_sizes(cfg.corpus)
    engines = {"espeak"} if cfg.corpus == "aishell" else {"espeak", "flite", "festival"}
    for e in sorted(engines):
        check_engine(e)
    t0 = time.time()
    if cfg.corpus == "aishell":
        sentences = chinese_sentences(*TEXT_LENGTH["aishell"], max_vocab=cfg.zh_max_vocab)
    else:
        sentences = english_sentences(*TEXT_LENGTH["librispeech"])
    speakers, utts = plan_corpus(cfg, sentences)
    logger.info("planned %d speakers, %d utterances from %d sentences (%.1f s)",
                len(speakers), len(utts), len(sentences), time.time() - t0)

    tmp = partial_dir(out)
    jobs = [(spk, us, str(tmp), cfg.seed, cfg.snr_db, cfg.train_acoustics)
            for spk, us in speaker_jobs(speakers, utts, cfg.max_utts_per_job, by_split=True)]

    t_audio = time.time()
    durations: Dict[str, float] = {}
    bar = progress(len(utts), f"synthesizing {cfg.corpus}", unit="utt")
    try:
        with ProcessPoolExecutor(max_workers=max(1, cfg.jobs)) as pool:
            for res in pool.map(_synthesize_job, jobs):
                durations.update(res)
                bar.update(len(res))
                bar.set_postfix(hours=f"{sum(durations.values()) / 3600:.2f}", refresh=False)
    finally:
        bar.close()
    audio_wall = time.time() - t_audio
    _write_texts(cfg, tmp, speakers, utts, durations)
    # text for a language model: every source sentence no dev, test or seen-split utterance reads
    held_out = {u.sentence.transcript for u in utts if u.split != "train"}
    (tmp / LM_TEXT).write_text("".join(s.transcript + "\n" for s in sentences if s.transcript not in held_out),
                               encoding="utf-8")

    splits = [s for s in (*SPLITS, SEEN) if s in cfg.sizes]
    hours = {s: sum(durations[u.id] for u in utts if u.split == s) / 3600 for s in splits}
    total = sum(durations.values())
    size_bytes = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
    summary = {
        "corpus": cfg.corpus,
        "seed": cfg.seed,
        "hours": {s: round(h, 4) for s, h in hours.items()},
        "utterances": {s: sum(1 for u in utts if u.split == s) for s in splits},
        "speakers": {s: sum(1 for k in speakers if k.split == s) for s in splits},
        "size_mb": round(size_bytes / 1e6, 1),
        "synthesis_wall_seconds": round(audio_wall, 1),
        "realtime_factor": round(total / max(audio_wall, 1e-9), 1),
        "jobs": cfg.jobs,
    }
    record = {
        "summary": summary,
        "config": {**asdict(cfg), "out_dir": str(out)},
        "speakers": [{"id": s.id, "split": s.split, "gender": s.gender, "level": s.level,
                      **asdict(s.voice)} for s in speakers],
    }
    (tmp / "synthesis.json").write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, out)
    logger.info(
        "%s: %s h (%s %s), %d utterances, %.1f MB in %.1f s of synthesis = %.0fx real time on %d jobs",
        out, round(total / 3600, 3), "/".join(splits), "/".join(f"{hours[s]:.2f}" for s in splits), len(utts),
        size_bytes / 1e6, audio_wall, summary["realtime_factor"], cfg.jobs,
    )
    return summary
