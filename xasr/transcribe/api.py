"""Transcribe audio with a trained model directory: the Python API under ``xasr transcribe``.

In: inputs as :func:`xasr.transcribe.inputs.list_inputs` takes them (audio files, folders,
``wav.scp`` lists, lhotse manifests, ``(samples, sample_rate)`` pairs), a decoding method.
Out: one :class:`Transcription` per input (text, duration, segments with times, timing,
error), or, with :meth:`Transcriber.transcribe_to_dir`, the files of
:mod:`xasr.transcribe.writers`, resumable.

    from xasr import Transcriber
    asr = Transcriber.from_pretrained("exp/stage2/model", models_dir="models")
    results = asr.transcribe(["a.wav", (samples, 8000)], method="llm_greedy")
    print(results[0].text, results[0].segments, results[0].timing)

How: background threads load the inputs (down-mixed, resampled to 16 kHz), cut them into
speech segments with the energy VAD of :mod:`xasr.transcribe.vad` (at most ``max_segment``
seconds each; an input without speech gets empty text and never reaches the model) and
compute each segment's features as the model was trained with
(:mod:`xasr.transcribe.batching`). Segments of up to ``chunk_seconds`` of loaded speech are
sorted by duration and decoded in batches of at most ``max_batch_seconds`` seconds of audio.
An input is finished, and reported, when all its segments are; its text joins the segment
texts in time order (with a space, except between Chinese or Japanese characters). A bad input (missing, unreadable, not audio, empty, NaN samples, a
failing command) gets ``error`` set and the rest goes on.

Timing per input: ``load`` (reading, conversion and VAD), ``features``, and ``decode``: its
share of the model time of the batches its segments were in, in proportion to their duration.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from xasr.errors import XasrError
from xasr.transcribe.audio import MODEL_SAMPLE_RATE, AudioConverter, AudioError
from xasr.transcribe.inputs import AudioSource, list_inputs
from xasr.transcribe.vad import VadConfig, segment_speech

logger = logging.getLogger(__name__)

FRAME_SHIFT = 160  # samples per feature frame (10 ms at 16 kHz) for both feature types


@dataclass
class Segment:
    start: float  # seconds from the start of the input
    end: float
    text: str
    no_speech_prob: Optional[float] = None  # the CTC head's lowest blank posterior in the segment
    words: Optional[List[dict]] = None  # with word timestamps: [{"word", "start", "end", "probability"}]


@dataclass
class Transcription:
    id: str
    text: str = ""
    path: Optional[str] = None
    duration: float = 0.0  # seconds
    segments: List[Segment] = field(default_factory=list)
    timing: Dict[str, float] = field(default_factory=dict)  # seconds: load, features, decode
    error: Optional[str] = None
    warnings: List[str] = field(default_factory=list)  # e.g. a truncated file, transcribed as far as it goes

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return {"id": self.id, "path": self.path, "text": self.text, "duration": round(self.duration, 3),
                "segments": [_segment_dict(s) for s in self.segments],
                "timing": {k: round(v, 4) for k, v in self.timing.items()}, "error": self.error,
                "warnings": list(self.warnings)}


def _segment_dict(s: Segment) -> dict:
    out = {"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text,
           "no_speech_prob": None if s.no_speech_prob is None else round(s.no_speech_prob, 4)}
    if s.words is not None:
        out["words"] = s.words
    return out


@dataclass
class RunSummary:
    """What :meth:`Transcriber.transcribe_to_dir` did."""

    inputs: int = 0
    skipped: int = 0  # already in the output directory
    transcribed: int = 0
    failed: int = 0
    no_speech: int = 0
    with_warnings: int = 0  # transcribed, but damaged (e.g. a truncated file): see each result's warnings
    audio_seconds: float = 0.0  # of the inputs transcribed in this run
    wall_seconds: float = 0.0

    @property
    def audio_seconds_per_second(self) -> float:
        return self.audio_seconds / max(self.wall_seconds, 1e-9)


def _is_cjk(ch: str) -> bool:
    return ("\u3040" <= ch <= "\u30ff" or "\u3400" <= ch <= "\u4dbf" or "\u4e00" <= ch <= "\u9fff"
            or "\uf900" <= ch <= "\ufaff" or "\uff00" <= ch <= "\uffef")


def join_texts(texts: Iterable[str]) -> str:
    """Segment texts -> one text: a space between them, none between CJK characters."""
    out = ""
    for t in texts:
        t = t.strip()
        if not t:
            continue
        if out and not (_is_cjk(out[-1]) and _is_cjk(t[0])):
            out += " "
        out += t
    return out


class _Item:
    """An input between loading and its last decoded segment."""

    def __init__(self, source: AudioSource) -> None:
        self.source = source
        self.feats: List[Any] = []  # features of each segment (T, F)
        self.duration = source.duration or 0.0
        self.spans: List[Tuple[int, int]] = []  # speech segments in samples
        self.texts: List[Optional[str]] = []
        self.no_speech: List[Optional[float]] = []
        self.words: List[Optional[List[dict]]] = []
        self.remaining = 0
        self.timing = {"load": 0.0, "features": 0.0, "decode": 0.0}
        self.error: Optional[str] = None

    def result(self) -> Transcription:
        sr = MODEL_SAMPLE_RATE
        if self.error:
            return Transcription(id=self.source.id, path=self.source.path, duration=self.duration,
                                 timing=dict(self.timing), error=self.error, warnings=list(self.source.warnings))
        segs = [Segment(a / sr, b / sr, (t or "").strip(), p, w)
                for (a, b), t, p, w in zip(self.spans, self.texts, self.no_speech, self.words)]
        return Transcription(id=self.source.id, text=join_texts(s.text for s in segs), path=self.source.path,
                             duration=self.duration, segments=segs, timing=dict(self.timing),
                             warnings=list(self.source.warnings))


class _NoBar:
    def update(self, seconds: float) -> None:
        pass

    def add_total(self, seconds: float) -> None:
        pass

    def close(self) -> None:
        pass


class _AudioBar(_NoBar):
    """A progress bar in whole seconds of audio (its rate: seconds of audio per second)."""

    def __init__(self, total_seconds: float, desc: str) -> None:
        from xasr.utils.progress import progress

        self.total, self.done = total_seconds, 0.0
        self.bar = progress(int(round(total_seconds)), desc, unit="s audio")

    def update(self, seconds: float) -> None:
        self.done += seconds
        target = min(int(self.done), self.bar.total) if self.bar.total else int(self.done)
        if target > self.bar.n:
            self.bar.update(target - self.bar.n)

    def add_total(self, seconds: float) -> None:
        self.total += seconds
        self.bar.total = int(round(self.total))
        self.bar.refresh()

    def close(self) -> None:
        if self.bar.total and self.bar.n < self.bar.total and self.done >= self.total - 1:
            self.bar.update(self.bar.total - self.bar.n)  # rounding
        self.bar.close()


def model_fingerprint(model_dir: Optional[str]) -> Optional[str]:
    """sha256 (first 16 hex digits) of a model directory's trained weights."""
    if not model_dir:
        return None
    path = Path(model_dir) / "model.safetensors"
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


class Transcriber:
    """A trained model with its features, a VAD and batched decoding of many inputs."""

    sample_rate = MODEL_SAMPLE_RATE

    def __init__(self, model, units, features: str, device: str = "cpu", vad: Optional[VadConfig] = None,
                 model_dir: Optional[str] = None, load_workers: int = 2, word_timestamps: bool = False,
                 options=None) -> None:
        """``options``: the decoding options (a :class:`xasr.decoding.options.DecodingOptions`;
        None: the model config's, which hold the model directory's tuned ``decoding.json``)."""
        from xasr.decoding.methods import options_for
        from xasr.transcribe.batching import (feature_function, max_feature_frames, min_feature_frames,
                                              model_feature_bins)

        from xasr.model_dir import DEFAULT_METHOD, read_decoding

        self.model, self.units, self.features, self.device = model, units, features, device
        self.model_dir = model_dir
        self.word_timestamps = word_timestamps  # words with times in each segment (CTC forced alignment)
        self.word_pad: Optional[Tuple[float, float]] = None  # (lead, trail) seconds; None: align.py's defaults
        decoding = read_decoding(model_dir) if model_dir else None
        # the method the model directory names (chosen and tuned by the recipe), else llm_greedy
        self.default_method = decoding["method"] if decoding else DEFAULT_METHOD
        self.options = options if options is not None else options_for(model)
        self.vad = vad or VadConfig()
        self.load_workers = max(1, load_workers)
        self._features = feature_function(features, model_feature_bins(model, features), self.sample_rate)
        self.min_samples = min_feature_frames(model) * FRAME_SHIFT
        self.max_samples = max_feature_frames(model) * FRAME_SHIFT  # 0: no limit
        self.converter = AudioConverter(self.sample_rate)

    @classmethod
    def from_pretrained(cls, model_dir: str, models_dir: Optional[str] = None, device: str = "cpu",
                        threads: int = 0, vad: Optional[VadConfig] = None,
                        word_timestamps: bool = False) -> "Transcriber":
        """Load a model directory made by training (frozen parts found by path or installed
        name in ``models_dir``); ``threads`` > 0 sets torch's CPU threads."""
        import torch

        from xasr.model_dir import load_model_dir

        if threads > 0:
            torch.set_num_threads(threads)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise XasrError(f"device {device}: CUDA is not available on this machine (use --device cpu)")
        if device != "cpu" and not device.startswith("cuda"):
            raise XasrError(f"device {device!r}: use cpu, cuda or cuda:N")
        model, cfg, units = load_model_dir(model_dir, models_dir=models_dir, device=device)
        return cls(model, units, cfg.data.features, device=device, vad=vad, model_dir=str(model_dir),
                   word_timestamps=word_timestamps)

    # ------------------------------------------------------------------ checks
    def check_method(self, method: str) -> None:
        from xasr.decoding.methods import check_methods

        check_methods([method], "method")

    def check_vad(self) -> None:
        limit = self.max_samples / self.sample_rate
        if self.max_samples and self.vad.max_segment > limit:
            raise XasrError(f"max segment length {self.vad.max_segment} s exceeds what the encoder accepts "
                            f"({limit:g} s)")
        if self.vad.max_segment <= 2 * self.min_samples / self.sample_rate:
            raise XasrError(f"max segment length {self.vad.max_segment} s is too short for the encoder")
        from xasr.transcribe.vad import DETECTORS

        if self.vad.detector not in DETECTORS:
            raise XasrError(f"VAD detector {self.vad.detector!r}: choose from {', '.join(DETECTORS)}")

    def settings(self, method: str) -> dict:
        """What determines the results (compared when an output directory is resumed)."""
        out = {"model_dir": str(Path(self.model_dir).resolve()) if self.model_dir else None,
               "model_fingerprint": model_fingerprint(self.model_dir), "method": method,
               "features": self.features, "vad": asdict(self.vad)}
        if self.word_timestamps:
            out["word_timestamps"] = True
        if method == "llm_rescore":
            out["rescore"] = {"ctc_weight": self.options.rescore_ctc_weight,
                              "length_bonus": self.options.rescore_length_bonus}
        if method in ("ctc_beam", "llm_rescore") and self.options.homophone_scale != 1.0:
            out["homophone_scale"] = self.options.homophone_scale  # the CTC search's N-best depends on it
        return out

    # ------------------------------------------------------------------ public API
    def transcribe(self, inputs: Any, method: Optional[str] = None, max_batch_seconds: float = 60.0,
                   progress: bool = False) -> List[Transcription]:
        """Transcribe ``inputs`` (a path, or a list of paths / ``(samples, rate)`` pairs);
        returns one :class:`Transcription` per input, in input order (folders and lists
        expand to their items)."""
        if isinstance(inputs, (str, os.PathLike)) or (isinstance(inputs, tuple) and len(inputs) == 2
                                                      and not isinstance(inputs[0], (str, os.PathLike))):
            inputs = [inputs]
        sources = list_inputs(inputs)
        results: Dict[str, Transcription] = {}
        t0 = time.time()
        for t in self.iter_transcribe(sources, method, max_batch_seconds, progress=progress):
            results[t.id] = t
        self._log_speed(list(results.values()), time.time() - t0)
        return [results[s.id] for s in sources]

    def transcribe_to_dir(self, inputs: Sequence[Any], out_dir: str, method: Optional[str] = None,
                          max_batch_seconds: float = 60.0, srt: bool = False, overwrite: bool = False,
                          formats: Sequence[str] = (),
                          progress: bool = True) -> RunSummary:
        """Transcribe into ``out_dir`` (results.jsonl, text and a file per input in each of
        ``formats``: txt, vtt, srt, tsv, json or all; ``srt=True`` adds srt), skipping inputs an
        earlier run finished there; see :mod:`xasr.transcribe.writers`."""
        from xasr.transcribe.writers import OutputDir

        method = method or self.default_method
        self.check_method(method)
        self.check_vad()
        sources = list_inputs(inputs)
        out = OutputDir(out_dir, self.settings(method), formats=[*formats, *(["srt"] if srt else [])],
                        overwrite=overwrite)
        todo = [s for s in sources if s.id not in out.done]
        summary = RunSummary(inputs=len(sources), skipped=len(sources) - len(todo))
        logger.info("%d inputs: %d already done in %s, %d to transcribe with %s", len(sources), summary.skipped,
                    out_dir, len(todo), method)
        t0 = time.time()
        finished = []
        try:
            for t in self.iter_transcribe(todo, method, max_batch_seconds, progress=progress):
                out.write(t.to_dict())
                finished.append(t)
        finally:
            out.close()
        out.finish(order=[s.id for s in sources])
        summary.wall_seconds = time.time() - t0
        summary.transcribed = sum(t.ok for t in finished)
        summary.failed = sum(not t.ok for t in finished)
        summary.no_speech = sum(t.ok and not t.segments for t in finished)
        summary.with_warnings = sum(t.ok and bool(t.warnings) for t in finished)
        if summary.with_warnings:
            logger.warning("%d inputs were transcribed with warnings (damaged files): see \"warnings\" in %s",
                           summary.with_warnings, Path(out_dir) / "results.jsonl")
        summary.audio_seconds = sum(t.duration for t in finished)
        self._log_speed(finished, summary.wall_seconds)
        return summary

    def iter_transcribe(self, sources: Sequence[AudioSource], method: Optional[str] = None,
                        max_batch_seconds: float = 60.0, chunk_seconds: float = 600.0,
                        progress: bool = False) -> Iterator[Transcription]:
        """Yield a :class:`Transcription` for each source as soon as it is finished (not in
        input order). ``method`` None: the model directory's own (``default_method``)."""
        method = method or self.default_method
        self.check_method(method)
        self.check_vad()
        bar, unknown = self._bar(sources, method) if progress else (_NoBar(), set())
        pending: List[_Item] = []
        pending_seconds = 0.0
        try:
            for item in self._loaded(sources, bar, unknown, chunk_seconds):
                if item.error or not item.spans:
                    self._report(item)
                    bar.update(item.duration)
                    yield item.result()
                    continue
                pending.append(item)
                pending_seconds += sum(b - a for a, b in item.spans) / self.sample_rate
                if pending_seconds >= chunk_seconds:
                    yield from self._decode_items(pending, method, max_batch_seconds, bar)
                    pending, pending_seconds = [], 0.0
            if pending:
                yield from self._decode_items(pending, method, max_batch_seconds, bar)
        finally:
            bar.close()
        summary = self.converter.summary()
        if summary:
            logger.info("audio conversions so far: %s", summary)

    # ------------------------------------------------------------------ internals
    def _bar(self, sources: Sequence[AudioSource], method: str):
        known = [s.probe_duration() for s in sources]
        bar = _AudioBar(sum(d for d in known if d), f"transcribing ({method})")
        return bar, {s.id for s, d in zip(sources, known) if d is None}

    def _loaded(self, sources: Sequence[AudioSource], bar, unknown: set,
                lookahead_seconds: float) -> Iterator[_Item]:
        """Load, segment and featurize sources in background threads, yielding them in order.

        Work is queued up to ``lookahead_seconds`` of audio ahead of what was taken (an input
        of unknown length counts as 30 s), so the threads keep loading while a chunk decodes.
        """
        futures: deque = deque()
        ahead = 0.0
        it = iter(sources)

        def fill() -> None:
            nonlocal ahead
            while ahead < lookahead_seconds or not futures:
                s = next(it, None)
                if s is None:
                    return
                d = s.duration if s.duration is not None else (s.probe_duration() or 30.0)
                futures.append((pool.submit(self._load, s), d))
                ahead += d

        with ThreadPoolExecutor(self.load_workers, thread_name_prefix="xasr-load") as pool:
            try:
                fill()
                while futures:
                    future, d = futures.popleft()
                    ahead -= d
                    item = future.result()
                    fill()
                    if item.source.id in unknown:
                        bar.add_total(item.duration)
                    yield item
            finally:
                for f, _ in futures:
                    f.cancel()

    def _load(self, source: AudioSource) -> _Item:
        """Load, segment and compute features (in a loading thread); failures set ``error``."""
        item = _Item(source)
        t0 = time.time()
        try:
            samples = source.load(self.converter)
            item.duration = len(samples) / self.sample_rate
            item.spans = self._segments(samples)
            t1 = time.time()
            item.feats = [self._features(samples[a:b]) for a, b in item.spans]
            item.timing["features"] = time.time() - t1
            item.texts = [None] * len(item.spans)
            item.no_speech = [None] * len(item.spans)
            item.words = [None] * len(item.spans)
            item.remaining = len(item.spans)
        except AudioError as e:
            item.error = str(e)
        except Exception as e:  # an unexpected failure on one input must not stop the others
            logger.exception("%s: loading failed", source.path or source.id)
            item.error = f"{source.path or source.id}: loading failed ({type(e).__name__}: {e})"
        item.timing["load"] = time.time() - t0 - item.timing["features"]
        return item

    def _segments(self, samples: np.ndarray) -> List[Tuple[int, int]]:
        n = len(samples)
        spans = segment_speech(samples, self.sample_rate, self.vad)
        out = []
        for a, b in spans:  # widen segments too short for the encoder, inside the signal
            if b - a < self.min_samples:
                if n < self.min_samples:
                    raise AudioError(f"{n / self.sample_rate:.3f} s of audio is too short for the model "
                                     f"(at least {self.min_samples / self.sample_rate:.3f} s)")
                mid = (a + b) // 2
                a = max(0, min(mid - self.min_samples // 2, n - self.min_samples))
                b = a + self.min_samples
            out.append((a, b))
        return out

    def _report(self, item: _Item) -> None:
        if item.error:
            logger.error("%s: %s", item.source.id, item.error)
        else:
            logger.debug("%s: no speech found in %.2f s", item.source.id, item.duration)

    def _decode_items(self, items: List[_Item], method: str, max_batch_seconds: float,
                      bar) -> Iterator[Transcription]:
        from xasr.transcribe.batching import list_batches

        segs = [(item, k) for item in items for k in range(len(item.spans))]
        durs = [(item.spans[k][1] - item.spans[k][0]) / self.sample_rate for item, k in segs]
        for batch in list_batches(durs, max_batch_seconds):
            chosen = [segs[i] for i in batch]
            self._decode_segments(chosen, method)
            bar.update(sum(durs[i] for i in batch))
            for item, k in chosen:
                item.remaining -= 1
                if item.remaining == 0:
                    speech = sum(b - a for a, b in item.spans) / self.sample_rate
                    bar.update(max(0.0, item.duration - speech))  # the silence between segments
                    item.feats = []
                    if item.error:
                        self._report(item)
                    yield item.result()

    def _decode_segments(self, chosen: List[Tuple[_Item, int]], method: str) -> None:
        """Decode segments as one batch; on failure, one by one; a segment that fails alone
        marks its input as failed."""
        from xasr.decoding.methods import decode
        from xasr.transcribe.batching import make_batch

        try:
            feats = [item.feats[k] for item, k in chosen]
            ids = [f"{item.source.id}#{k}" for item, k in chosen]
            durs = [(item.spans[k][1] - item.spans[k][0]) / self.sample_rate for item, k in chosen]
            t0 = time.time()
            batch = make_batch(ids, feats, durs, self.features).to(self.device)
            result = decode(self.model, batch, method, self.units, self.options, keep_ctc=self.word_timestamps)
            texts = result.texts
            wall = time.time() - t0
            if len(texts) != len(chosen):
                raise RuntimeError(f"the model returned {len(texts)} texts for {len(chosen)} segments")
        except XasrError:  # the model cannot do this at all (e.g. an LLM method without an LLM)
            raise
        except Exception as e:
            if len(chosen) > 1:
                logger.warning("a batch of %d segments failed (%s: %s); decoding them one by one", len(chosen),
                               type(e).__name__, e)
                for one in chosen:
                    self._decode_segments([one], method)
                return
            item, k = chosen[0]
            logger.exception("%s: decoding segment %d failed", item.source.id, k)
            item.error = f"decoding failed ({type(e).__name__}: {e})"
            item.texts[k] = ""
            return
        total = sum(durs)
        no_speech = result.no_speech or [None] * len(chosen)
        for (item, k), text, d, p in zip(chosen, texts, durs, no_speech):
            item.texts[k] = text
            item.no_speech[k] = p
            item.timing["decode"] += wall * d / max(total, 1e-9)
        if self.word_timestamps:
            self._align_words(chosen, texts, durs, result.ctc)

    def _align_words(self, chosen: List[Tuple[_Item, int]], texts: List[str], durs: List[float], ctc) -> None:
        """Word times of each decoded segment: its text aligned to the CTC posteriors of the
        batch just decoded (:mod:`xasr.decoding.align`)."""
        from xasr.decoding.align import WORD_LEAD, WORD_TRAIL, word_timestamps

        log_probs, lens = ctc
        lead, trail = self.word_pad if self.word_pad is not None else (WORD_LEAD, WORD_TRAIL)
        for b, ((item, k), text, d) in enumerate(zip(chosen, texts, durs)):
            n = int(lens[b])
            lp = log_probs[b, :n].float().cpu().numpy()
            item.words[k] = word_timestamps(lp, text or "", self.units, d / max(n, 1), blank=self.model.ctc.blank_id,
                                            offset=item.spans[k][0] / self.sample_rate, lead=lead, trail=trail)

    def _log_speed(self, finished: List[Transcription], wall: float) -> None:
        audio = sum(t.duration for t in finished)
        failed = sum(not t.ok for t in finished)
        silent = sum(t.ok and not t.segments for t in finished)
        logger.info("transcribed %d inputs (%.1f s of audio; %d failed, %d without speech) in %.1f s: "
                    "%.1f s of audio per second", len(finished), audio, failed, silent, wall,
                    audio / max(wall, 1e-9))
