"""Serve a trained model over HTTP with OpenAI's audio transcription API.

Usage:
  xasr serve --model-dir exp/stage2/model --models-dir models            # http://127.0.0.1:8000
  xasr serve --model-dir exp/stage2/model --host 0.0.0.0 --port 9000 --api-key "$KEY" --max-queue 32

Then, with the openai package (or curl):
  from openai import OpenAI
  client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused-without---api-key")
  print(client.audio.transcriptions.create(model="xasr", file=open("a.wav", "rb")).text)

  curl http://127.0.0.1:8000/v1/audio/transcriptions -F file=@a.wav -F model=xasr -F response_format=srt

Routes: POST /v1/audio/transcriptions (multipart file, model, response_format json | text | srt |
vtt | verbose_json, timestamp_granularities[]=word, language, prompt), GET /v1/models, GET
/health. Requests from all clients are queued and decoded together in batches by one worker;
a full queue answers 503 (Retry-After), an upload over --max-upload-mb or audio over
--max-duration 413, an unreadable upload 400, a missing or wrong --api-key token 401.
Decoding and segmentation are those of `xasr transcribe` (the model directory's tuned method by
default, Silero VAD), so a file gets the same text either way.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", required=True, help="a model directory made by `xasr train`")
    p.add_argument("--models-dir", default=None, help="where the frozen pretrained models are installed")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 serves other machines)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-name", default=None,
                   help="the model id clients send and /v1/models lists (default: xasr-<model directory's parent>)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1 routes")
    p.add_argument("--method", default=None,
                   help="decoding method (default: the one the model directory's decoding.json names, else llm_greedy)")
    p.add_argument("--language", default=None,
                   help="language reported in verbose_json (default: chinese or english, from the model's units)")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting for the model; more get 503")
    p.add_argument("--max-upload-mb", type=float, default=25.0, help="larger uploads get 413")
    p.add_argument("--max-duration", type=float, default=1800.0, help="longer audio (seconds) gets 413")
    p.add_argument("--max-batch-seconds", type=float, default=60.0, help="seconds of audio decoded together")
    p.add_argument("--batch-wait", type=float, default=0.05,
                   help="seconds the worker waits for more requests to batch with the first")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--vad", default="silero", choices=["silero", "energy"], help="how speech is found [silero]")
    p.add_argument("--max-segment", type=float, default=20.0, help="longest segment in seconds")


def default_model_name(model_dir: str) -> str:
    """xasr-<the directory above the model directory's experiment folder>, e.g. xasr-aishell
    for recipes/aishell/exp/stage2/model."""
    parts = Path(model_dir).resolve().parts
    if "exp" in parts:
        i = len(parts) - 1 - parts[::-1].index("exp")
        if i > 0:
            return f"xasr-{parts[i - 1]}"
    return f"xasr-{Path(model_dir).resolve().name}"


def run(args: argparse.Namespace) -> int:
    from xasr.bin.options import check_positive
    from xasr.errors import XasrError
    from xasr.decoding.methods import check_methods
    from xasr.model_dir import check_model_dir

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise XasrError(f"xasr serve needs fastapi, uvicorn and python-multipart ({e}); pip install them") from None
    if args.method is not None:
        check_methods([args.method], "--method")
    for option in ("max_queue", "max_upload_mb", "max_duration", "max_batch_seconds", "max_segment"):
        check_positive(getattr(args, option), "--" + option.replace("_", "-"))
    check_positive(args.batch_wait, "--batch-wait", allow_zero=True)
    check_positive(args.threads, "--threads", allow_zero=True)
    if not 0 < args.port < 65536:
        raise XasrError(f"--port {args.port}: choose 1-65535")
    check_model_dir(args.model_dir, "--model-dir")

    from xasr.transcribe.api import Transcriber
    from xasr.transcribe.server import ServerConfig, model_language, serve
    from xasr.transcribe.vad import VadConfig

    asr = Transcriber.from_pretrained(args.model_dir, models_dir=args.models_dir, device=args.device,
                                      threads=args.threads, vad=VadConfig(detector=args.vad,
                                                                          max_segment=args.max_segment))
    config = ServerConfig(model_name=args.model_name or default_model_name(args.model_dir), method=args.method,
                          language=args.language or model_language(asr.units), api_key=args.api_key,
                          max_queue=args.max_queue, max_upload_mb=args.max_upload_mb,
                          max_duration=args.max_duration, max_batch_seconds=args.max_batch_seconds,
                          batch_wait=args.batch_wait)
    serve(asr, config, host=args.host, port=args.port)
    return 0
