"""An HTTP transcription server with OpenAI's audio API shape, on FastAPI + uvicorn.

In: a :class:`~xasr.transcribe.api.Transcriber` and :class:`ServerConfig` limits.
Out: a FastAPI app (:func:`create_app`) serving

- ``POST /v1/audio/transcriptions``: multipart ``file`` (any audio soundfile or PyAV reads),
  ``model``, ``response_format`` (json | text | srt | vtt | verbose_json), ``language`` and
  ``prompt`` (accepted; the model has no use for either), ``temperature`` (accepted, decoding
  is deterministic), ``timestamp_granularities[]`` (``word`` adds word times to verbose_json);
- ``GET /v1/models``: the one model served; ``GET /health``: status and queue length.

How: a request's upload is decoded in the request (a bad file is a 400 for that request
alone), then queued. One worker thread owns the model: it takes the oldest request, waits up
to ``batch_wait`` seconds for others (up to ``max_batch_seconds`` of audio in all) and
transcribes them together, so concurrent clients share batches. The queue is bounded: when
``max_queue`` requests wait, new ones get 503 with Retry-After. Uploads over
``max_upload_mb`` or audio over ``max_duration`` seconds get 413. With ``api_key`` set, the
``/v1`` routes need ``Authorization: Bearer <key>`` (401 otherwise). Errors are JSON in
OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.
"""

# no ``from __future__ import annotations`` here: FastAPI reads the route functions' annotations
# (``request: Request``) as objects; as strings they would not resolve to the local import
import asyncio
import hmac
import logging
import queue
import threading
import time
import zlib
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from xasr.errors import XasrError

logger = logging.getLogger(__name__)

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


@dataclass
class ServerConfig:
    model_name: str = "xasr"  # the id clients pass as ``model`` and GET /v1/models lists
    method: Optional[str] = None  # decoding method; None: the model directory's own
    language: str = "unknown"  # reported in verbose_json when the request names none
    api_key: Optional[str] = None  # Bearer token the /v1 routes need; None: open
    max_queue: int = 64  # requests waiting for the model; more get 503
    max_upload_mb: float = 25.0  # larger uploads get 413 (OpenAI's own limit is 25 MB)
    max_duration: float = 1800.0  # seconds of audio per request; longer gets 413
    max_batch_seconds: float = 60.0  # seconds of audio decoded together
    batch_wait: float = 0.05  # seconds the worker waits for more requests before decoding
    retry_after: int = 1  # seconds, in the 503's Retry-After header


class ApiError(Exception):
    """An error answered as ``{"error": {...}}`` with an HTTP status."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None, headers: Optional[dict] = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class QueueFull(Exception):
    pass


@dataclass
class _Request:
    samples: np.ndarray
    sample_rate: int
    seconds: float
    words: bool
    future: Future = field(default_factory=Future)


class BatchWorker:
    """One thread that owns the Transcriber and decodes queued requests in batches."""

    def __init__(self, transcriber, method: Optional[str], max_queue: int, max_batch_seconds: float,
                 batch_wait: float) -> None:
        self.transcriber = transcriber
        self.method = method or transcriber.default_method
        transcriber.check_method(self.method)
        transcriber.check_vad()
        self.max_batch_seconds, self.batch_wait = max_batch_seconds, batch_wait
        self.queue: "queue.Queue[Optional[_Request]]" = queue.Queue(maxsize=max_queue)
        self.batches: List[int] = []  # requests per decoded batch (served figures, tests)
        self._held: Optional[_Request] = None  # taken from the queue, over the batch's audio budget
        self._thread = threading.Thread(target=self._run, name="xasr-serve-worker", daemon=True)
        self._thread.start()

    def submit(self, samples: np.ndarray, sample_rate: int, words: bool) -> Future:
        req = _Request(samples, sample_rate, len(samples) / sample_rate, words)
        try:
            self.queue.put_nowait(req)
        except queue.Full:
            raise QueueFull() from None
        return req.future

    def waiting(self) -> int:
        return self.queue.qsize()

    def stop(self) -> None:
        self.queue.put(None)  # blocks while the queue is full: the worker drains it
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while True:
            first = self._held or self.queue.get()
            self._held = None
            if first is None:
                return
            batch, seconds = [first], first.seconds
            deadline = time.monotonic() + self.batch_wait
            stop = False
            while seconds < self.max_batch_seconds:
                try:
                    req = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if req is None:
                    stop = True
                    break
                if seconds + req.seconds > self.max_batch_seconds:
                    self._held = req  # first of the next batch
                    break
                batch.append(req)
                seconds += req.seconds
            self._decode(batch)
            if stop:
                return

    def _decode(self, batch: List[_Request]) -> None:
        from xasr.transcribe.inputs import list_inputs

        self.batches.append(len(batch))
        try:
            self.transcriber.word_timestamps = any(r.words for r in batch)
            sources = list_inputs([(r.samples, r.sample_rate) for r in batch])
            results = {t.id: t for t in self.transcriber.iter_transcribe(
                sources, self.method, self.max_batch_seconds)}
            for r, s in zip(batch, sources):
                r.future.set_result(results[s.id])
        except Exception as e:  # a failure of the model, not of one request: all of them fail
            logger.exception("decoding a batch of %d requests failed", len(batch))
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(e)


def model_language(units) -> str:
    """"chinese" when most of the model's units are CJK characters, else "english"."""
    from xasr.scoring.normalize import is_cjk

    pieces = [units.id_to_piece(i) for i in range(units.get_piece_size())]
    cjk = sum(any(is_cjk(c) for c in p) for p in pieces)
    return "chinese" if cjk > len(pieces) / 2 else "english"


def compression_ratio(text: str) -> float:
    """Bytes of the text over bytes of its zlib compression (Whisper's repetition signal)."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def verbose_json(t, language: str, units, words: bool) -> dict:
    """A Transcription in the shape of OpenAI's verbose_json response."""
    segments = []
    for k, s in enumerate(x for x in t.segments if x.text):
        segments.append({"id": k, "seek": 0, "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text,
                         "tokens": [int(i) for i in units.encode(s.text)], "temperature": 0.0,
                         "avg_logprob": None, "compression_ratio": round(compression_ratio(s.text), 4),
                         "no_speech_prob": None if s.no_speech_prob is None else round(s.no_speech_prob, 4)})
    out = {"task": "transcribe", "language": language, "duration": round(t.duration, 3), "text": t.text,
           "segments": segments}
    if words:
        out["words"] = [{"word": w["word"], "start": w["start"], "end": w["end"]}
                        for s in t.segments for w in (s.words or [])]
    return out


def create_app(transcriber, config: ServerConfig):
    """The FastAPI app serving ``transcriber`` (see the module docstring)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from xasr.transcribe.audio import AudioError, read_audio_bytes
    from xasr.transcribe.writers import format_entry

    for name in ("max_queue", "max_upload_mb", "max_duration", "max_batch_seconds"):
        if getattr(config, name) <= 0:
            raise XasrError(f"serve: {name} must be > 0, got {getattr(config, name)}")
    created = int(time.time())
    state = {}

    @asynccontextmanager
    async def lifespan(app):
        state["worker"] = BatchWorker(transcriber, config.method, config.max_queue, config.max_batch_seconds,
                                      config.batch_wait)
        logger.info("serving %s (%s decoding) with batches of up to %g s of audio; queue of %d",
                    config.model_name, state["worker"].method, config.max_batch_seconds, config.max_queue)
        yield
        state.pop("worker").stop()

    app = FastAPI(title="xasr", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.config = config

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        type_ = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return JSONResponse(ApiError(e.status_code, str(e.detail), type_).body(), status_code=e.status_code)

    def authorize(request: Request) -> None:
        if config.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), config.api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                           "authentication_error", code="invalid_api_key")

    @app.get("/health")
    async def health():
        worker = state.get("worker")
        return {"status": "ok" if worker else "starting", "model": config.model_name,
                "queued": worker.waiting() if worker else 0, "max_queue": config.max_queue,
                "batches": len(worker.batches) if worker else 0,
                "requests_decoded": sum(worker.batches) if worker else 0}

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return {"object": "list", "data": [{"id": config.model_name, "object": "model", "created": created,
                                            "owned_by": "xasr"}]}

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        authorize(request)
        limit = int(config.max_upload_mb * 1024 * 1024)
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit + 64 * 1024:  # the form's fields fit in 64 KB
            raise ApiError(413, f"upload of {int(length) / 2**20:.1f} MB exceeds the server's limit of "
                                f"{config.max_upload_mb:g} MB", param="file", code="upload_too_large")
        try:
            form = await request.form()
        except Exception as e:
            raise ApiError(400, f"the request body is not a readable multipart form ({e})") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "no file: send the audio as the multipart field 'file'", param="file")
        name = upload.filename or "file"
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise ApiError(413, f"{name}: upload exceeds the server's limit of {config.max_upload_mb:g} MB",
                           param="file", code="upload_too_large")
        model = form.get("model")
        if not model:
            raise ApiError(400, "no model: name the model (GET /v1/models lists it)", param="model")
        if model != config.model_name:
            raise ApiError(404, f"model {model!r} is not served here; this server serves {config.model_name!r}",
                           param="model", code="model_not_found")
        fmt = form.get("response_format") or "json"
        if fmt not in RESPONSE_FORMATS:
            raise ApiError(400, f"response_format {fmt!r}: choose from {', '.join(RESPONSE_FORMATS)}",
                           param="response_format")
        granularities = set(form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities"))
        bad = sorted(granularities - {"word", "segment"})
        if bad:
            raise ApiError(400, f"timestamp_granularities: {bad[0]!r} is not word or segment",
                           param="timestamp_granularities")
        if "word" in granularities and fmt != "verbose_json":
            raise ApiError(400, "word timestamps need response_format verbose_json", param="timestamp_granularities")
        language = form.get("language") or config.language
        try:
            samples, rate = await run_in_threadpool(read_audio_bytes, data, name)
        except AudioError as e:
            raise ApiError(400, str(e), param="file", code="invalid_audio") from None
        seconds = len(samples) / rate
        if seconds > config.max_duration:
            raise ApiError(413, f"{name}: {seconds:.1f} s of audio exceeds the server's limit of "
                                f"{config.max_duration:g} s", param="file", code="audio_too_long")
        worker = state["worker"]
        t0 = time.monotonic()
        try:
            future = worker.submit(samples, rate, words="word" in granularities)
        except QueueFull:
            raise ApiError(503, f"the server is busy ({config.max_queue} requests waiting); retry later",
                           "server_error", code="queue_full",
                           headers={"Retry-After": str(config.retry_after)}) from None
        try:
            t = await asyncio.wrap_future(future)
        except Exception as e:
            raise ApiError(500, f"{name}: decoding failed ({type(e).__name__}: {e})", "server_error") from None
        if t.error:
            raise ApiError(400, f"{name}: {t.error}", param="file", code="invalid_audio")
        logger.info("%s: %.2f s of audio transcribed in %.2f s", name, seconds, time.monotonic() - t0)
        if fmt == "text":
            return PlainTextResponse(t.text + "\n")
        if fmt in ("srt", "vtt"):
            return PlainTextResponse(format_entry(t.to_dict(), fmt))
        if fmt == "verbose_json":
            return verbose_json(t, language, transcriber.units, "word" in granularities)
        return {"text": t.text}

    return app


def serve(transcriber, config: ServerConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(transcriber, config), host=host, port=port, log_level="info")
