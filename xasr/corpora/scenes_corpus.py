"""A speech-with-image corpus made here: scene pictures, sentences spoken about them, noisy copies.

In: a :class:`ScenesConfig` (output directory, seed, training hours, dev/test sizes, noise levels).
Out (``out_dir``):

  images/{train,dev,test}/<scene>.png          224 x 224 RGB pictures (:mod:`xasr.corpora.scenes`)
  audio/{train,dev,test}/<utt>.flac            16 kHz speech, light 20-40 dB background as in synth.py
  audio/{dev,test}_noisy_<snr>/<utt>-snr<snr>.flac   the same utterances in babble + pink noise
  audio/{dev,test}_masked/<utt>-masked.flac    key words masked by noise bursts (a designed condition)
  audio/train_noisy/<utt>-noisy.flac           one noisy or masked copy per training utterance
  scenes.json                                  config, summary, noise recipe, speakers, scenes, every
                                               utterance and copy (text, facts, noise, SNR, gain)
  manifests/scenes_cuts_<set>.jsonl.gz         lhotse cuts, sets: train, dev, test, train_noisy,
                                               {dev,test}_noisy_<snr> (snr 10, 5, 0, m5 = -5 dB),
                                               {dev,test}_masked

Each cut has one supervision (upper-case English text, speaker) and ``cut.custom`` with
``image`` (absolute path of the PNG), ``scene_id``, ``scene`` (the scene as a JSON string, since
lhotse would take a dict with a "width" for one of its image manifests; :func:`cut_scene` parses
it), ``template``, ``keywords`` ([word index, word, kind] of the words the picture decides),
``claims`` (the facts the sentence states), ``keyword_spans`` (estimated [start, end] seconds of
each keyword), ``condition``, ``noise`` (the recipe of that copy) and ``source_id`` (the clean
utterance). Audio and image paths in the manifests are absolute, so they load from any working
directory; after moving the corpus, rewrite them with :func:`write_manifests`.

Speech comes from the same voices as the LibriSpeech synthesis (:mod:`xasr.corpora.tts`, voices
chosen by :mod:`xasr.corpora.synth`): speakers and engine voices are disjoint between train, dev
and test, and so are the scenes (each picture belongs to one split; no two scenes in the corpus
have the same objects in the same places). dev and test have one sentence per scene, train
``train_utts_per_scene`` sentences from distinct templates and speakers. dev and test do not
depend on the training size. The result depends only on the config, not on ``jobs``.

Noise recipe (all levels relative to the power of the whole clean file):
  * ``noisy_<snr>``: babble (``babble_talkers`` other utterances of the same split, other scenes
    and speakers, each at equal power, summed) plus pink noise, at equal power, scaled to the SNR.
    The babble speaks the same small vocabulary, so the colour / shape / position words of the
    target are hard to pick out by ear, while the sentence frame stays audible at 0 dB.
  * ``masked`` (designed condition): the same background at ``masked_background_snr_db`` plus
    a pink-noise burst over each keyword at ``masked_keyword_snr_db`` relative to the speech in
    that span. Keyword times are estimated, not measured: the spoken sentence is cut at its
    pauses into the phrases the punctuation predicts, and each phrase's duration is shared among
    its words in proportion to their spelling (0.06 s a letter + 0.1 s). Against the ends of
    spoken prefixes of the same sentences the estimate is off by 60-160 ms on average (voice
    dependent; weighting by each word spoken alone was no better), so bursts are widened by
    60 ms + 25 % of the word on each side.
Every mix whose peak would exceed 0.99 is scaled down as a whole (``gain`` in its noise record),
which leaves its SNR unchanged.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from xasr.corpora.scenes import KEYWORD_KINDS, Scene, describe_scene, render_scene, sample_scene
from xasr.corpora.synth import make_voices, partial_dir, speaker_jobs, split_variants
from xasr.corpora.tts import TARGET_SAMPLE_RATE, Voice, check_engine, synthesize
from xasr.errors import XasrError
from xasr.utils.progress import progress

logger = logging.getLogger(__name__)

CORPUS = "scenes"
SPLITS = ("train", "dev", "test")
EVAL_SPLITS = ("dev", "test")
RECORD = "scenes.json"
FRAME = TARGET_SAMPLE_RATE // 100  # 10 ms
MIN_PAUSE_FRAMES = 8  # a silence this long inside a sentence is a phrase break
MASK_MARGIN = (0.06, 0.25)  # seconds + share of the word's duration added on each side of a burst
BURST_RAMP = 0.015  # seconds of raised-cosine fade at each end of a burst
PEAK = 0.99
SECONDS_PER_WORD = 0.28  # at rate 1.0, measured on these sentences; plans the training hours


class ScenesCorpusError(XasrError):
    """The scenes corpus cannot be made or read; the message names the file and the problem."""


@dataclass
class ScenesConfig:
    out_dir: str
    seed: int = 0
    train_hours: float = 0.75
    dev_scenes: int = 200  # one utterance per scene
    test_scenes: int = 200
    train_utts_per_scene: int = 2
    train_speakers: Optional[int] = None  # default: 30 per training hour, at least 4
    eval_speakers: int = 8  # in dev and in test each
    snrs_db: Tuple[float, ...] = (10.0, 5.0, 0.0, -5.0)
    masked: bool = True
    masked_background_snr_db: float = 10.0
    masked_keyword_snr_db: float = -10.0
    train_noisy: bool = True  # one noisy copy of every training utterance (train_noisy)
    train_noisy_snr_db: Tuple[float, float] = (-5.0, 10.0)  # uniform; a third of them masked instead
    babble_talkers: int = 3
    clean_snr_db: Optional[Tuple[float, float]] = (20.0, 40.0)  # light background of the clean audio
    image_size: int = 224
    jobs: int = 2
    max_utts_per_job: int = 25
    manifest_dir: Optional[str] = None  # default: <out_dir>/manifests


# ---------------------------------------------------------------------------------------------
# Pictures (loading and the mismatched-picture control are xasr.data.images': load_image,
# shuffle_images; the image encoder says how its input is normalised)

def cut_scene(cut) -> Scene:
    """The :class:`Scene` a cut of this corpus talks about (from ``cut.custom["scene"]``)."""
    return Scene.from_dict(json.loads(cut.custom["scene"]))


# ---------------------------------------------------------------------------------------------
# Planning

@dataclass
class SceneSpeaker:
    id: str
    split: str
    voice: Voice
    level: float  # peak amplitude of the speaker's recordings


@dataclass
class PlannedUtterance:
    id: str
    split: str
    scene_id: str
    speaker: str
    text: str
    spoken: str
    template: str
    keywords: List[Tuple[int, str, str]]
    claims: List[dict]
    breaks: List[int] = field(default_factory=list)  # word indices followed by , : ? .

    @property
    def path(self) -> str:
        return f"audio/{self.split}/{self.id}.flac"


def _breaks(spoken: str) -> List[int]:
    words = spoken.split()
    return [i for i, w in enumerate(words[:-1]) if w[-1] in ",:;?.!"]


def _estimated_seconds(text: str, voice: Voice) -> float:
    return SECONDS_PER_WORD * len(text.split()) / voice.rate + 0.5


def plan_scenes_corpus(cfg: ScenesConfig) -> Tuple[List[SceneSpeaker], List[Tuple[str, Scene]],
                                                   List[PlannedUtterance]]:
    """Speakers, scenes (with their split) and every utterance's text; no audio or pictures yet.

    test, then dev, then train, each from its own random stream, so that the evaluation sets do
    not change with the training size."""
    variants = split_variants(cfg.seed)
    seen_signatures = set()
    used_speaker_ids = set()
    speakers: List[SceneSpeaker] = []
    scenes: List[Tuple[str, Scene]] = []
    utts: List[PlannedUtterance] = []
    n_train_speakers = cfg.train_speakers or max(4, int(round(cfg.train_hours * 30)))
    for split in ("test", "dev", "train"):
        rng = random.Random(f"scenes-{cfg.seed}-{split}")
        count = n_train_speakers if split == "train" else cfg.eval_speakers
        if count < 1:
            raise ScenesCorpusError(f"split {split}: needs at least one speaker, got {count}")
        split_speakers = []
        for voice in make_voices("librispeech", split, count, rng, variants[split]):
            sid = str(rng.randrange(10, 9999))
            while sid in used_speaker_ids:
                sid = str(rng.randrange(10, 9999))
            used_speaker_ids.add(sid)
            split_speakers.append(SceneSpeaker(sid, split, voice, round(rng.uniform(0.25, 0.9), 3)))
        speakers.extend(split_speakers)
        per_scene = cfg.train_utts_per_scene if split == "train" else 1
        n_scenes = {"dev": cfg.dev_scenes, "test": cfg.test_scenes}.get(split)
        if n_scenes is not None and n_scenes < 1:
            raise ScenesCorpusError(f"split {split}: needs at least one scene, got {n_scenes}")
        if split == "train" and cfg.train_hours <= 0:
            raise ScenesCorpusError(f"train_hours must be positive, got {cfg.train_hours}")
        budget = cfg.train_hours * 3600.0
        turn = 0
        i = 0
        while (i < n_scenes) if n_scenes is not None else (budget > 0):
            scene_id = f"{split}{i:05d}"
            for _ in range(1000):
                scene = sample_scene(scene_id, rng, cfg.image_size)
                if scene.signature() not in seen_signatures:
                    break
            else:
                raise ScenesCorpusError("could not find a new scene after 1000 draws")
            seen_signatures.add(scene.signature())
            scenes.append((split, scene))
            for k, d in enumerate(describe_scene(scene, rng, per_scene)):
                spk = split_speakers[turn % len(split_speakers)]
                turn += 1
                utts.append(PlannedUtterance(f"{scene_id}-{k}", split, scene_id, spk.id, d.text, d.spoken,
                                             d.template, d.keywords, d.claims, _breaks(d.spoken)))
                budget -= _estimated_seconds(d.text, spk.voice)
            i += 1
    return speakers, scenes, utts


# ---------------------------------------------------------------------------------------------
# Audio

def _active_frames(audio: np.ndarray, rel_db: float = -34.0) -> np.ndarray:
    n = len(audio) // FRAME
    if n == 0:
        return np.zeros(0, bool)
    rms = np.sqrt(np.mean(audio[:n * FRAME].reshape(n, FRAME).astype(np.float64) ** 2, axis=1))
    return rms > rms.max() * 10 ** (rel_db / 20) if rms.max() > 0 else np.zeros(n, bool)


def word_weight(word: str) -> float:
    """Relative spoken length of a word, from its spelling."""
    return 0.06 * len(word) + 0.1


def estimate_word_spans(audio: np.ndarray, words: Sequence[str], breaks: Sequence[int] = ()
                        ) -> List[Tuple[float, float]]:
    """Rough (start, end) seconds of each word in a noise-free TTS output.

    The speech is cut at its longest pauses into as many phrases as the punctuation predicts
    (``breaks``: word indices followed by a mark); each phrase's time is shared among its words
    in proportion to :func:`word_weight`.
    """
    act = _active_frames(audio)
    idx = np.flatnonzero(act)
    if idx.size == 0 or not words:
        return [(0.0, 0.0)] * len(words)
    first, last = int(idx[0]), int(idx[-1]) + 1
    gaps = []  # (length, start frame, end frame) of silences inside the speech
    k = first
    while k < last:
        if not act[k]:
            j = k
            while j < last and not act[j]:
                j += 1
            if j - k >= MIN_PAUSE_FRAMES:
                gaps.append((j - k, k, j))
            k = j
        else:
            k += 1
    segments = [(first, last)]
    groups = [list(range(len(words)))]
    breaks = sorted(b for b in breaks if b < len(words) - 1)
    if breaks and len(gaps) >= len(breaks):
        chosen = sorted(sorted(gaps, reverse=True)[:len(breaks)], key=lambda g: g[1])
        bounds = [first] + [x for g in chosen for x in (g[1], g[2])] + [last]
        segments = [(bounds[2 * i], bounds[2 * i + 1]) for i in range(len(breaks) + 1)]
        cuts = [0] + [b + 1 for b in breaks] + [len(words)]
        groups = [list(range(cuts[i], cuts[i + 1])) for i in range(len(breaks) + 1)]
    spans: List[Tuple[float, float]] = []
    for (a, b), group in zip(segments, groups):
        weights = [word_weight(words[i]) for i in group]
        total = sum(weights) or 1.0
        t = a * FRAME / TARGET_SAMPLE_RATE
        seg = (b - a) * FRAME / TARGET_SAMPLE_RATE
        for w in weights:
            spans.append((t, t + seg * w / total))
            t += seg * w / total
    return spans


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise with a 1/f power spectrum above 50 Hz."""
    from scipy.fft import next_fast_len

    if n == 0:
        return np.zeros(0, np.float32)
    m = next_fast_len(n, real=True)  # FFTs of awkward lengths are many times slower
    spec = np.fft.rfft(rng.standard_normal(m))
    f = np.fft.rfftfreq(m, 1.0 / TARGET_SAMPLE_RATE)
    spec /= np.sqrt(np.maximum(f, 50.0))
    x = np.fft.irfft(spec, m)[:n]
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-12)


def babble(n: int, sources: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Unit-power sum of the sources, each at equal power, looped and started at random offsets."""
    out = np.zeros(n, np.float64)
    for s in sources:
        s = _unit(s)
        reps = int(math.ceil((n + len(s)) / len(s)))
        looped = np.tile(s, reps)
        start = int(rng.integers(0, len(s)))
        out += looped[start:start + n]
    return _unit(out).astype(np.float32)


def snr_db(speech: np.ndarray, noise: np.ndarray) -> float:
    return 10 * math.log10(float(np.sum(speech.astype(np.float64) ** 2))
                           / (float(np.sum(noise.astype(np.float64) ** 2)) + 1e-20))


def scale_to_snr(speech: np.ndarray, noise: np.ndarray, snr: float) -> np.ndarray:
    """``noise`` scaled so that 10 log10(P_speech / P_noise) = snr over the whole file."""
    p_s = float(np.mean(speech.astype(np.float64) ** 2))
    p_n = float(np.mean(noise.astype(np.float64) ** 2)) + 1e-20
    return (noise * math.sqrt(p_s / (10 ** (snr / 10)) / p_n)).astype(np.float32)


def _finish(audio: np.ndarray, uid: str, seed: int, level: float,
            snr_range: Optional[Tuple[float, float]]) -> Tuple[np.ndarray, int]:
    """Recording level, 0.05-0.3 s of silence at each end, light background; returns the lead."""
    rng = np.random.default_rng([seed, zlib.crc32(uid.encode()), 1])
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 0:
        audio = audio * (level / peak)
    lead = int(rng.uniform(0.05, 0.3) * TARGET_SAMPLE_RATE)
    tail = int(rng.uniform(0.05, 0.3) * TARGET_SAMPLE_RATE)
    audio = np.concatenate([np.zeros(lead, np.float32), audio, np.zeros(tail, np.float32)]).astype(np.float32)
    if snr_range is not None:
        audio = audio + scale_to_snr(audio, pink_noise(audio.size, rng), rng.uniform(*snr_range))
    return np.clip(audio, -1.0, 1.0).astype(np.float32), lead


def _tts_job(job) -> List[dict]:
    spk, utts, root, seed, clean_snr = job
    wavs = synthesize(spk.voice, [u.spoken for u in utts])
    records = []
    for u, audio in zip(utts, wavs):
        if audio.size < TARGET_SAMPLE_RATE // 10:
            raise ScenesCorpusError(f"{spk.voice.timbre} produced no speech for {u.id}: {u.spoken!r}")
        spans = estimate_word_spans(audio, u.text.split(), u.breaks)
        audio, lead = _finish(audio, u.id, seed, spk.level, clean_snr)
        offset = lead / TARGET_SAMPLE_RATE
        path = Path(root) / u.path
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio, TARGET_SAMPLE_RATE, subtype="PCM_16", format="FLAC")
        records.append({"id": u.id, "num_samples": int(audio.size),
                        "word_spans": [[round(a + offset, 3), round(b + offset, 3)] for a, b in spans]})
    return records


def _image_job(job) -> int:
    items, root = job
    for split, scene_dict in items:
        path = Path(root) / "images" / split / f"{scene_dict['id']}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        render_scene(Scene.from_dict(scene_dict)).save(path, format="PNG")
    return len(items)


def snr_tag(snr: float) -> str:
    """10 -> "10", -5 -> "m5", 2.5 -> "2p5": safe in file and manifest names."""
    s = f"{snr:g}".replace("-", "m").replace(".", "p")
    return s


@dataclass
class CopyPlan:
    id: str  # the copy's utterance id
    source: str  # the clean utterance's id
    condition: str  # manifest set, e.g. test_noisy_m5
    kind: str  # "noisy" | "masked"
    snr_db: float  # noisy: the SNR; masked: the background SNR
    babble: List[str]  # utterance ids mixed into the babble

    @property
    def path(self) -> str:
        return f"audio/{self.condition}/{self.id}.flac"


def plan_copies(cfg: ScenesConfig, utts: Sequence[PlannedUtterance]) -> List[CopyPlan]:
    """Which noisy copies to make, with their babble talkers (same split, other scenes/speakers)."""
    by_split: Dict[str, List[PlannedUtterance]] = {}
    for u in utts:
        by_split.setdefault(u.split, []).append(u)
    copies = []
    for split, us in by_split.items():
        if split == "train" and not cfg.train_noisy:
            continue
        for u in us:
            rng = random.Random(f"copies-{cfg.seed}-{u.id}")
            pool = [v.id for v in us if v.scene_id != u.scene_id and v.speaker != u.speaker]
            if len(pool) < cfg.babble_talkers:
                pool = [v.id for v in us if v.scene_id != u.scene_id] or [v.id for v in us if v.id != u.id]
            if not pool:
                raise ScenesCorpusError(f"split {split}: babble needs at least two utterances")

            def talkers() -> List[str]:
                return rng.sample(pool, min(cfg.babble_talkers, len(pool)))

            if split == "train":
                if cfg.masked and rng.random() < 1 / 3:
                    copies.append(CopyPlan(f"{u.id}-noisy", u.id, "train_noisy", "masked",
                                           cfg.masked_background_snr_db, talkers()))
                else:
                    copies.append(CopyPlan(f"{u.id}-noisy", u.id, "train_noisy", "noisy",
                                           round(rng.uniform(*cfg.train_noisy_snr_db), 2), talkers()))
                continue
            for snr in cfg.snrs_db:
                copies.append(CopyPlan(f"{u.id}-snr{snr_tag(snr)}", u.id, f"{split}_noisy_{snr_tag(snr)}",
                                       "noisy", float(snr), talkers()))
            if cfg.masked:
                copies.append(CopyPlan(f"{u.id}-masked", u.id, f"{split}_masked", "masked",
                                       cfg.masked_background_snr_db, talkers()))
    return copies


def _mask_bursts(clean: np.ndarray, spans: Sequence[Tuple[float, float]], keyword_snr: float,
                 rng: np.random.Generator) -> Tuple[np.ndarray, List[List[float]]]:
    """Pink-noise bursts over the (widened) spans, each at keyword_snr below the speech there."""
    out = np.zeros(clean.size, np.float32)
    used = []
    sr = TARGET_SAMPLE_RATE
    for a, b in spans:
        margin = MASK_MARGIN[0] + MASK_MARGIN[1] * (b - a)
        s, e = max(0, int((a - margin) * sr)), min(clean.size, int(math.ceil((b + margin) * sr)))
        if e - s < 2:
            continue
        speech = clean[s:e]
        p_s = float(np.mean(speech.astype(np.float64) ** 2))
        burst = pink_noise(e - s, rng) * math.sqrt(p_s / 10 ** (keyword_snr / 10))
        ramp = min(int(BURST_RAMP * sr), (e - s) // 2)
        if ramp > 0:
            fade = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp, dtype=np.float32))
            burst[:ramp] *= fade
            burst[-ramp:] *= fade[::-1]
        out[s:e] += burst
        used.append([round(s / sr, 3), round(e / sr, 3)])
    return out, used


def _noise_job(job) -> List[dict]:
    copies, spans_by_id, paths, root, seed, cfg_noise = job
    cache: Dict[str, np.ndarray] = {}

    def read(uid: str) -> np.ndarray:
        if uid not in cache:
            cache[uid] = sf.read(Path(root) / paths[uid], dtype="float32")[0]
        return cache[uid]

    records = []
    for c in copies:
        clean = read(c.source)
        rng = np.random.default_rng([seed, zlib.crc32(c.id.encode()), 2])
        background = (babble(clean.size, [read(b) for b in c.babble], rng) + pink_noise(clean.size, rng))
        background = scale_to_snr(clean, background, c.snr_db)
        noise = background
        record = {"type": "babble+pink", "babble": c.babble, "snr_db": c.snr_db}
        if c.kind == "masked":
            spans = spans_by_id[c.source]
            bursts, used = _mask_bursts(clean, spans, cfg_noise["keyword_snr_db"], rng)
            noise = background + bursts
            record = {"type": "keyword_mask", "background": "babble+pink", "babble": c.babble,
                      "background_snr_db": c.snr_db, "keyword_snr_db": cfg_noise["keyword_snr_db"],
                      "burst_spans": used}
        mix = clean + noise
        peak = float(np.max(np.abs(mix))) if mix.size else 0.0
        gain = min(1.0, PEAK / peak) if peak > 0 else 1.0
        record["gain"] = round(gain, 6)
        record["measured_snr_db"] = round(snr_db(clean, noise), 3)
        path = Path(root) / c.path
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (mix * gain).astype(np.float32), TARGET_SAMPLE_RATE, subtype="PCM_16", format="FLAC")
        records.append({"id": c.id, "num_samples": int(mix.size), "noise": record})
    return records


def _run_pool(jobs: Sequence, fn, n_jobs: int, total: int, desc: str, count) -> List:
    results = []
    bar = progress(total, desc, unit="utt")
    try:
        if n_jobs <= 1:
            it = map(fn, jobs)
        else:
            pool = ProcessPoolExecutor(max_workers=n_jobs)
            it = pool.map(fn, jobs)
        for r in it:
            results.append(r)
            bar.update(count(r))
    finally:
        bar.close()
        if n_jobs > 1:
            pool.shutdown()
    return results


# ---------------------------------------------------------------------------------------------
# The corpus

def _keyword_stats(utts: Sequence[PlannedUtterance]) -> Dict[str, dict]:
    """How evenly each kind of keyword spreads over its values (entropy in bits)."""
    stats = {}
    for kind in KEYWORD_KINDS:
        counts: Dict[str, int] = {}
        for u in utts:
            for _, w, k in u.keywords:
                if k == kind:
                    counts[w] = counts.get(w, 0) + 1
        total = sum(counts.values())
        ent = -sum(v / total * math.log2(v / total) for v in counts.values()) if total else 0.0
        stats[kind] = {"count": total, "values": len(counts), "entropy_bits": round(ent, 3),
                       "max_entropy_bits": round(math.log2(len(counts)), 3) if counts else 0.0}
    return stats


def synthesize_scenes_corpus(cfg: ScenesConfig) -> dict:
    """Make the corpus in ``cfg.out_dir`` (built in ``<out_dir>.partial``, then moved into place;
    an existing directory is refused) and write its manifests; returns the summary."""
    out = Path(cfg.out_dir)
    if out.exists():
        raise ScenesCorpusError(f"{out} already exists; remove it or choose another directory")
    for engine in ("espeak", "flite", "festival"):
        check_engine(engine)
    t_start = time.time()
    speakers, scenes, utts = plan_scenes_corpus(cfg)
    copies = plan_copies(cfg, utts)
    logger.info("planned %d scenes, %d utterances by %d speakers, %d noisy copies",
                len(scenes), len(utts), len(speakers), len(copies))
    tmp = partial_dir(out)

    # 1. pictures and clean speech (festival first: its jobs are the slowest)
    tts_jobs = [("tts", (spk, us, str(tmp), cfg.seed, cfg.clean_snr_db))
                for spk, us in speaker_jobs(speakers, utts, cfg.max_utts_per_job)]
    scene_items = [(split, s.to_dict()) for split, s in scenes]
    image_jobs = [("image", (scene_items[i:i + 100], str(tmp))) for i in range(0, len(scene_items), 100)]
    t_audio = time.time()
    results = _run_pool(tts_jobs + image_jobs, _dispatch, cfg.jobs, len(utts) + len(scenes),
                        "synthesizing scenes", lambda r: r if isinstance(r, int) else len(r))
    clean_wall = time.time() - t_audio
    clean = {r["id"]: r for rs in results if not isinstance(rs, int) for r in rs}

    # 2. noisy copies
    spans_by_id = {}
    for u in utts:
        spans = clean[u.id]["word_spans"]
        spans_by_id[u.id] = [tuple(spans[i]) for i, _, _ in u.keywords]
    per_job = max(1, cfg.max_utts_per_job * 2)
    noise_cfg = {"keyword_snr_db": cfg.masked_keyword_snr_db}
    paths = {u.id: u.path for u in utts}
    noise_jobs = []
    for i in range(0, len(copies), per_job):
        chunk = copies[i:i + per_job]
        needed = {x for c in chunk for x in [c.source, *c.babble]}
        noise_jobs.append(("noise", (chunk, {k: spans_by_id[k] for k in needed},
                                     {k: paths[k] for k in needed}, str(tmp), cfg.seed, noise_cfg)))
    t_noise = time.time()
    noisy_results = _run_pool(noise_jobs, _dispatch, cfg.jobs, len(copies), "mixing noise", len)
    noise_wall = time.time() - t_noise
    noisy = {r["id"]: r for rs in noisy_results for r in rs}

    # 3. the record, then the manifests from it
    sr = TARGET_SAMPLE_RATE
    utt_records = []
    for u in utts:
        rec = clean[u.id]
        utt_records.append({
            **{k: v for k, v in asdict(u).items() if k != "breaks"}, "path": u.path,
            "num_samples": rec["num_samples"], "word_spans": rec["word_spans"],
            "keyword_spans": [list(spans_by_id[u.id][j]) for j in range(len(u.keywords))],
        })
    copy_records = [{**asdict(c), "path": c.path, "num_samples": noisy[c.id]["num_samples"],
                     "noise": noisy[c.id]["noise"]} for c in copies]
    sets: Dict[str, float] = {}
    for u in utt_records:
        sets[u["split"]] = sets.get(u["split"], 0.0) + u["num_samples"] / sr
    for c in copy_records:
        sets[c["condition"]] = sets.get(c["condition"], 0.0) + c["num_samples"] / sr
    clean_seconds = sum(u["num_samples"] for u in utt_records) / sr
    size_bytes = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
    summary = {
        "corpus": CORPUS,
        "seed": cfg.seed,
        "scenes": {s: sum(1 for sp, _ in scenes if sp == s) for s in SPLITS},
        "utterances": {s: sum(1 for u in utts if u.split == s) for s in SPLITS},
        "speakers": {s: sum(1 for k in speakers if k.split == s) for s in SPLITS},
        "hours": {k: round(v / 3600, 4) for k, v in sorted(sets.items())},
        "templates": len({u.template for u in utts}),
        "size_mb": round(size_bytes / 1e6, 1),
        "clean_synthesis_wall_seconds": round(clean_wall, 1),
        "clean_realtime_factor": round(clean_seconds / max(clean_wall, 1e-9), 1),
        "noise_wall_seconds": round(noise_wall, 1),
        "total_wall_seconds": round(time.time() - t_start, 1),
        "jobs": cfg.jobs,
    }
    record = {
        "summary": summary,
        "config": {**asdict(cfg), "out_dir": str(out)},
        "noise_recipe": {
            "snr_definition": "10 log10(P_speech / P_noise), powers over the whole clean file",
            "noisy": f"babble of {cfg.babble_talkers} other utterances of the same split (other scenes "
                     "and speakers, equal power each) + pink noise, equal power, scaled to the SNR",
            "snrs_db": list(cfg.snrs_db),
            "masked": (f"the same background at {cfg.masked_background_snr_db} dB + pink-noise bursts "
                       f"over each keyword's estimated span (widened by {MASK_MARGIN[0]} s + "
                       f"{MASK_MARGIN[1]:.0%} of the word each side) at {cfg.masked_keyword_snr_db} dB "
                       "relative to the speech in the span") if cfg.masked else None,
            "train_noisy": (f"one copy per training utterance: babble+pink at SNR uniform in "
                            f"{list(cfg.train_noisy_snr_db)} dB, or (one in three) masked as above")
            if cfg.train_noisy else None,
            "gain": f"a mix whose peak exceeds {PEAK} is scaled down whole (SNR unchanged)",
        },
        "keyword_stats": _keyword_stats(utts),
        "sets": sorted(sets),
        "speakers": [{"id": s.id, "split": s.split, "level": s.level, **asdict(s.voice)} for s in speakers],
        "scenes": [{"split": split, **s.to_dict(), "image": f"images/{split}/{s.id}.png"} for split, s in scenes],
        "utterances": utt_records,
        "copies": copy_records,
    }
    (tmp / RECORD).write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, out)
    write_manifests(str(out), cfg.manifest_dir)
    logger.info("%s: %.3f h clean (%s), %d scenes, %d utterances, %d noisy copies, %.1f MB; clean speech "
                "in %.1f s = %.0fx real time, noise in %.1f s, %.1f s in all on %d jobs",
                out, clean_seconds / 3600, ", ".join(f"{k} {v}" for k, v in summary["hours"].items()
                                                      if k in SPLITS), len(scenes), len(utts), len(copies),
                size_bytes / 1e6, clean_wall, summary["clean_realtime_factor"], noise_wall,
                summary["total_wall_seconds"], cfg.jobs)
    return summary


def _dispatch(job):
    kind, payload = job
    if kind == "tts":
        return _tts_job(payload)
    if kind == "image":
        return _image_job(payload)
    return _noise_job(payload)


def read_record(corpus_dir: str) -> dict:
    path = Path(corpus_dir) / RECORD
    if not path.is_file():
        raise ScenesCorpusError(f"{path} does not exist: {corpus_dir} is not a scenes corpus "
                                "(make one with: xasr synth-scenes --out-dir ...)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ScenesCorpusError(f"{path} is not valid JSON: {e}") from e


def write_manifests(corpus_dir: str, manifest_dir: Optional[str] = None) -> Dict[str, Path]:
    """``scenes.json`` -> ``<manifest_dir>/scenes_cuts_<set>.jsonl.gz`` with absolute paths to the
    corpus where it is now (default manifest_dir: ``<corpus_dir>/manifests``)."""
    from lhotse import AudioSource, CutSet, MonoCut, Recording, SupervisionSegment

    root = Path(corpus_dir).resolve()
    rec = read_record(corpus_dir)
    out = Path(manifest_dir) if manifest_dir else root / "manifests"
    out.mkdir(parents=True, exist_ok=True)
    sr = TARGET_SAMPLE_RATE
    scenes = {s["id"]: s for s in rec["scenes"]}
    utts = {u["id"]: u for u in rec["utterances"]}

    def cut(uid: str, path: str, num_samples: int, u: dict, condition: str, noise: dict) -> MonoCut:
        duration = num_samples / sr
        recording = Recording(id=uid, sources=[AudioSource(type="file", channels=[0], source=str(root / path))],
                              sampling_rate=sr, num_samples=num_samples, duration=duration)
        sup = SupervisionSegment(id=uid, recording_id=uid, start=0.0, duration=duration, channel=0,
                                 text=u["text"], speaker=u["speaker"], language="English")
        scene = {k: v for k, v in scenes[u["scene_id"]].items() if k not in ("split", "image")}
        custom = {"image": str(root / scenes[u["scene_id"]]["image"]), "scene_id": u["scene_id"],
                  "scene": json.dumps(scene, separators=(",", ":")), "template": u["template"],
                  "keywords": u["keywords"], "claims": u["claims"],
                  "keyword_spans": u["keyword_spans"], "condition": condition, "noise": noise,
                  "source_id": u["id"]}
        return MonoCut(id=uid, start=0.0, duration=duration, channel=0, recording=recording,
                       supervisions=[sup], custom=custom)

    sets: Dict[str, List[MonoCut]] = {}
    for u in rec["utterances"]:
        clean_noise = {"type": "clean", "background_snr_db": rec["config"]["clean_snr_db"]}
        sets.setdefault(u["split"], []).append(cut(u["id"], u["path"], u["num_samples"], u, u["split"], clean_noise))
    for c in rec["copies"]:
        u = utts[c["source"]]
        sets.setdefault(c["condition"], []).append(cut(c["id"], c["path"], c["num_samples"], u, c["condition"],
                                                       c["noise"]))
    written = {}
    for name, cuts in sorted(sets.items()):
        path = out / f"{CORPUS}_cuts_{name}.jsonl.gz"
        tmp = path.with_name(path.name.replace(".jsonl.gz", ".partial.jsonl.gz"))
        CutSet.from_cuts(cuts).to_file(tmp)
        os.replace(tmp, path)
        written[name] = path
    logger.info("wrote %d manifests to %s: %s", len(written), out, ", ".join(written))
    return written
