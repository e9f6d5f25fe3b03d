"""xasr serve on a tiny model: OpenAI's own client and raw HTTP against the app; the same
text as the Transcriber; batching across concurrent clients; errors (400, 401, 404, 413,
503) that leave the server serving; the command itself on a real port."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf

from tests.transcribe.conftest import speechlike
from xasr.transcribe.vad import VadConfig

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from xasr.transcribe.server import ServerConfig, compression_ratio, create_app  # noqa: E402

SR = 16000
KEY = "sk-test-key"


def wav_bytes(seconds: float, seed: int, rate: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, speechlike(seconds, rate=rate, seed=seed), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def samples_of(data: bytes):
    x, rate = sf.read(io.BytesIO(data), dtype="float32")
    return x, rate


@pytest.fixture
def asr(tiny_transcriber):
    tiny_transcriber.vad = VadConfig(detector="energy")  # the signals are speech-like noise
    tiny_transcriber.word_timestamps = False
    return tiny_transcriber


def client_for(asr, **kw) -> TestClient:
    kw = {"model_name": "xasr-tiny", "method": "ctc_greedy", "language": "english", "api_key": KEY, **kw}
    return TestClient(create_app(asr, ServerConfig(**kw)))


def post(c, data: bytes, name: str = "a.wav", key: str = KEY, **fields):
    fields = {"model": "xasr-tiny", **fields}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return c.post("/v1/audio/transcriptions", files={"file": (name, data)}, data=fields, headers=headers)


def test_the_openai_client_gets_the_transcribers_text_in_every_response_format(asr, tmp_path):
    openai = pytest.importorskip("openai")
    paths = []
    for k, secs in enumerate([2.2, 3.4]):
        paths.append(tmp_path / f"u{k}.wav")
        paths[-1].write_bytes(wav_bytes(secs, seed=k))
    expected = asr.transcribe(paths, method="ctc_greedy")
    assert all(t.text for t in expected)
    with client_for(asr) as c:
        api = openai.OpenAI(base_url="http://testserver/v1", api_key=KEY, http_client=c)
        assert [m.id for m in api.models.list().data] == ["xasr-tiny"]
        for path, ref in zip(paths, expected):
            with open(path, "rb") as f:
                got = api.audio.transcriptions.create(model="xasr-tiny", file=f)
            assert got.text == ref.text
            with open(path, "rb") as f:
                assert api.audio.transcriptions.create(model="xasr-tiny", file=f,
                                                       response_format="text").strip() == ref.text
            with open(path, "rb") as f:
                srt = api.audio.transcriptions.create(model="xasr-tiny", file=f, response_format="srt")
            assert srt.startswith("1\n00:00:0") and ref.text in srt
            with open(path, "rb") as f:
                vtt = api.audio.transcriptions.create(model="xasr-tiny", file=f, response_format="vtt")
            assert vtt.startswith("WEBVTT") and ref.text in vtt
            with open(path, "rb") as f:
                v = api.audio.transcriptions.create(model="xasr-tiny", file=f, response_format="verbose_json",
                                                    timestamp_granularities=["word", "segment"], language="en",
                                                    prompt="ignored")
            assert v.text == ref.text and v.language == "en"
            assert abs(v.duration - ref.duration) < 1e-3
            assert [s.text for s in v.segments] == [s.text for s in ref.segments if s.text]
            words = [w.word for w in v.words]
            assert " ".join(words) == ref.text  # every word of the text, with its time
            assert all(0 <= w.start <= w.end <= v.duration + 1e-3 for w in v.words)
            assert v.segments[0].compression_ratio == pytest.approx(compression_ratio(v.segments[0].text), abs=1e-3)


def test_raw_http_errors_name_the_problem_and_the_server_keeps_serving(asr, tmp_path):
    good = wav_bytes(2.0, seed=3)
    with client_for(asr, max_upload_mb=0.2, max_duration=5.0) as c:
        assert c.get("/health").json()["status"] == "ok"  # open without the key
        r = post(c, good, key=None)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert post(c, good, key="wrong").status_code == 401
        assert c.get("/v1/models").status_code == 401
        r = post(c, b"this is not audio at all, only text\n" * 20, name="notes.txt")
        assert r.status_code == 400
        err = r.json()["error"]
        assert "notes.txt" in err["message"] and err["param"] == "file" and err["code"] == "invalid_audio"
        assert post(c, b"", name="empty.wav").status_code == 400
        r = post(c, good, model="whisper-1")
        assert r.status_code == 404 and "xasr-tiny" in r.json()["error"]["message"]
        r = post(c, good, response_format="docx")
        assert r.status_code == 400 and "response_format" in r.json()["error"]["message"]
        r = post(c, good, timestamp_granularities="word")  # words need verbose_json
        assert r.status_code == 400
        r = c.post("/v1/audio/transcriptions", data={"model": "xasr-tiny"}, headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 400 and "file" in r.json()["error"]["message"]
        r = post(c, wav_bytes(8.0, seed=4, rate=8000), name="long.wav")  # 0.13 MB, but 8 s > 5 s
        assert r.status_code == 413 and "long.wav" in r.json()["error"]["message"]
        r = post(c, os.urandom(300_000), name="big.wav")  # 0.29 MB > 0.2 MB
        assert r.status_code == 413 and r.json()["error"]["code"] == "upload_too_large"
        r = post(c, good)  # still serving after all of that
        assert r.status_code == 200
        assert r.json()["text"] == asr.transcribe([samples_of(good)], method="ctc_greedy")[0].text


def test_concurrent_clients_share_batches_and_each_gets_its_own_text(asr, tmp_path):
    clips = [wav_bytes(1.0 + 0.4 * k, seed=10 + k) for k in range(6)]
    alone = [t.text for t in asr.transcribe([samples_of(b) for b in clips],
                                            method="ctc_greedy")]
    assert len(set(alone)) == 6
    with client_for(asr, batch_wait=0.5) as c:
        with ThreadPoolExecutor(6) as pool:
            got = list(pool.map(lambda b: post(c, b).json()["text"], clips))
        health = c.get("/health").json()
    assert got == alone
    assert health["queued"] == 0 and health["requests_decoded"] == 6 and 1 <= health["batches"] <= 6


def test_batches_hold_several_requests(asr):
    from xasr.transcribe.server import BatchWorker

    worker = BatchWorker(asr, "ctc_greedy", max_queue=8, max_batch_seconds=60.0, batch_wait=0.5)
    try:
        futures = [worker.submit(speechlike(1.0 + 0.3 * k, seed=k), SR, words=False) for k in range(5)]
        texts = [f.result(timeout=60).text for f in futures]
    finally:
        worker.stop()
    assert sum(worker.batches) == 5 and len(worker.batches) < 5  # at least one batch of several requests
    alone = [asr.transcribe([(speechlike(1.0 + 0.3 * k, seed=k), SR)], method="ctc_greedy")[0].text
             for k in range(5)]
    assert texts == alone


def test_a_full_queue_answers_503_with_retry_after(asr, monkeypatch):
    entered, release = threading.Event(), threading.Event()
    inner = asr.iter_transcribe

    def slow(*a, **kw):
        entered.set()
        release.wait(30)
        yield from inner(*a, **kw)

    monkeypatch.setattr(asr, "iter_transcribe", slow)
    good = wav_bytes(1.5, seed=5)
    with client_for(asr, max_queue=1, batch_wait=0.0) as c, ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, c, good)  # taken by the worker, blocked in decoding
        assert entered.wait(30)
        second = pool.submit(post, c, good)  # waits in the queue (its one place)
        deadline = time.time() + 30
        while c.get("/health").json()["queued"] < 1:
            assert time.time() < deadline
            time.sleep(0.02)
        r = post(c, good)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "queue_full"
        release.set()
        assert first.result(30).status_code == 200 and second.result(30).status_code == 200
        assert post(c, good).status_code == 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_serve_command_answers_on_a_real_port(tiny_model_dir, tmp_path):
    openai = pytest.importorskip("openai")
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "xasr.bin.cli", "serve", "--model-dir", str(tiny_model_dir),
                             "--port", str(port), "--method", "ctc_greedy", "--vad", "energy", "--threads", "1",
                             "--model-name", "tiny"], stdout=log, stderr=subprocess.STDOUT)
    try:
        import httpx

        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()["status"] == "ok":
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.time() < deadline, "the server did not come up"
            time.sleep(0.2)
        path = tmp_path / "a.wav"
        path.write_bytes(wav_bytes(2.5, seed=7))
        api = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        with open(path, "rb") as f:
            got = api.audio.transcriptions.create(model="tiny", file=f).text
        assert got  # a random model still writes something
        out = subprocess.run([sys.executable, "-m", "xasr.bin.cli", "transcribe", "--model-dir", str(tiny_model_dir),
                              "--method", "ctc_greedy", "--vad", "energy", "--no-progress", str(path)],
                             capture_output=True, text=True, check=True).stdout
        assert out.split(" ", 1)[1].strip() == got  # the same text as xasr transcribe
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_serve_options_are_checked_before_the_model_loads(tmp_path):
    from xasr.bin.cli import main

    assert main(["serve", "--model-dir", str(tmp_path / "missing")]) == 1
    assert main(["serve", "--model-dir", str(tmp_path), "--max-queue", "0"]) == 1
    assert main(["serve", "--model-dir", str(tmp_path), "--method", "nope"]) == 1


def test_default_model_name_comes_from_the_recipe_directory():
    from xasr.bin.serve import default_model_name

    assert default_model_name("recipes/aishell/exp/stage2/model") == "xasr-aishell"
    assert default_model_name("/data/mymodel") == "xasr-mymodel"
