"""Load test of `xasr serve`: concurrent clients for a while, every request answered with the
text `xasr transcribe` gives the same file; throughput and latency against sequential use.

Usage:
  cd recipes/aishell && ../../.venv/bin/python ../../benchmarks/serve_load.py \\
      --model-dir exp/stage2/model --models-dir ../../models \\
      --cuts data/manifests/aishell_cuts_test.jsonl.gz --files 40 --clients 8 --seconds 180 \\
      --out-dir exp/serve_load

Steps: the first ``--files`` recordings of the manifest are written as WAV files and
transcribed by `xasr transcribe` (the reference texts, and the offline throughput); `xasr
serve` is started on a free port; one client sends the files one after another
(``--sequential-seconds``: sequential use through the server), then ``--clients`` clients send
them in random order for ``--seconds`` each, as fast as answers come. Every answer must be 200
with the reference text. Prints a Markdown table (throughput in seconds of audio per second,
latency percentiles, requests per batch, the server's peak RSS) and the command; writes
``serve-load.json`` and ``serve-load.png`` (latency distributions) to ``--out-dir``.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_gb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def wait_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 600.0) -> None:
    import httpx

    deadline = time.time() + timeout
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).json().get("status") == "ok":
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            sys.exit(f"the server exited ({proc.returncode}); see {log}:\n{log.read_text()[-2000:]}")
        if time.time() > deadline:
            sys.exit(f"the server did not come up in {timeout:g} s; see {log}")
        time.sleep(0.5)


def run_clients(url: str, model: str, files, durations, refs, clients: int, seconds: float, seed: int) -> dict:
    """``clients`` threads, each posting files in random order until ``seconds`` pass; returns
    per-request records and the wall time (the last answer included)."""
    import httpx

    records, lock = [], threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(k: int) -> None:
        rng = np.random.default_rng(seed + k)
        with httpx.Client(timeout=600) as http:
            while time.monotonic() < stop_at:
                i = int(rng.integers(len(files)))
                t0 = time.monotonic()
                with open(files[i], "rb") as f:
                    r = http.post(url + "/v1/audio/transcriptions", files={"file": (files[i].name, f)},
                                  data={"model": model})
                rec = {"file": i, "status": r.status_code, "latency": time.monotonic() - t0,
                       "audio": durations[i], "same_text": r.status_code == 200 and r.json()["text"] == refs[i]}
                with lock:
                    records.append(rec)

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"records": records, "wall": time.monotonic() - t0}


def summarize(name: str, clients: int, run: dict) -> dict:
    recs = run["records"]
    lat = np.array([r["latency"] for r in recs])
    ok = [r for r in recs if r["status"] == 200]
    return {"condition": name, "clients": clients, "requests": len(recs), "answered_200": len(ok),
            "same_text": sum(r["same_text"] for r in recs), "audio_seconds": round(sum(r["audio"] for r in ok), 1),
            "wall_seconds": round(run["wall"], 1),
            "audio_seconds_per_second": round(sum(r["audio"] for r in ok) / run["wall"], 2),
            **{f"latency_p{q}": round(float(np.percentile(lat, q)), 3) for q in (50, 90, 99)},
            "latency_max": round(float(lat.max()), 3)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--models-dir", default=None)
    p.add_argument("--cuts", required=True, help="a lhotse cut manifest; its first --files recordings are used")
    p.add_argument("--files", type=int, default=40)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=180.0, help="how long the concurrent clients send")
    p.add_argument("--sequential-seconds", type=float, default=60.0, help="how long the one sequential client sends")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the server and of xasr transcribe")
    p.add_argument("--batch-wait", type=float, default=0.05)
    p.add_argument("--out-dir", required=True)
    args = p.parse_args()
    import httpx
    from lhotse import CutSet

    out = Path(args.out_dir)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    cuts = [c for _, c in zip(range(args.files), CutSet.from_file(args.cuts))]
    files, durations = [], []
    for c in cuts:
        path = out / "wav" / f"{c.id}.wav"
        x = c.load_audio()[0]
        sf.write(path, x, c.sampling_rate, subtype="PCM_16")
        files.append(path)
        durations.append(len(x) / c.sampling_rate)
    xasr = [sys.executable, "-m", "xasr.bin.cli"]
    common = ["--model-dir", args.model_dir] + (["--models-dir", args.models_dir] if args.models_dir else [])

    print(f"xasr transcribe: {len(files)} files, {sum(durations):.1f} s of audio", flush=True)
    t0 = time.monotonic()
    run = subprocess.run(xasr + ["transcribe", *common, "--threads", str(args.threads), "--no-progress", "--overwrite",
                                 "--out-dir", str(out / "transcribe"), *map(str, files)], check=True,
                         capture_output=True, text=True)
    offline_wall = time.monotonic() - t0
    # the Transcriber's own figure, without loading the model
    speed = re.findall(r"([\d.]+) s of audio per second", run.stderr)
    texts = {}
    for line in (out / "transcribe" / "results.jsonl").read_text().splitlines():
        e = json.loads(line)
        texts[e["id"]] = e["text"]
    refs = [texts[f.stem] for f in files]

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = out / "serve.log"
    with open(log, "w") as logf:
        server = subprocess.Popen(xasr + ["serve", *common, "--port", str(port), "--threads", str(args.threads),
                                          "--model-name", "bench", "--batch-wait", str(args.batch_wait),
                                          "--max-queue", str(4 * args.clients)], stdout=logf, stderr=subprocess.STDOUT)
        try:
            wait_up(url, server, log)
            print(f"sequential client for {args.sequential_seconds:g} s", flush=True)
            seq = run_clients(url, "bench", files, durations, refs, 1, args.sequential_seconds, seed=0)
            before = httpx.get(url + "/health").json()
            print(f"{args.clients} concurrent clients for {args.seconds:g} s", flush=True)
            conc = run_clients(url, "bench", files, durations, refs, args.clients, args.seconds, seed=100)
            after = httpx.get(url + "/health").json()
            rss = peak_rss_gb(server.pid)
        finally:
            server.terminate()
            server.wait(60)
    per_batch = {"sequential": before["requests_decoded"] / max(before["batches"], 1),
                 "concurrent": (after["requests_decoded"] - before["requests_decoded"])
                 / max(after["batches"] - before["batches"], 1)}
    rows = [summarize("1 client, sequential", 1, seq),
            summarize(f"{args.clients} concurrent clients", args.clients, conc)]
    offline = {"condition": "xasr transcribe (offline, all files in one run)",
               "audio_seconds_per_second": float(speed[-1]) if speed else None,
               "wall_seconds_with_model_load": round(offline_wall, 1)}
    result = {"command": " ".join(map(shlex.quote, sys.argv)), "files": len(files),
              "audio_seconds_of_files": round(sum(durations), 1), "server_peak_rss_gb": round(rss, 2),
              "mean_requests_per_batch": {k: round(v, 2) for k, v in per_batch.items()},
              "rows": rows, "offline": offline}
    (out / "serve-load.json").write_text(json.dumps(result, indent=1) + "\n")
    lost = [r for r in rows if r["answered_200"] != r["requests"] or r["same_text"] != r["requests"]]

    print(f"\ncommand: {result['command']}\n")
    print("| condition | requests | answered 200 | same text as xasr transcribe | audio s per s | "
          "latency p50 / p90 / p99 / max (s) |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['condition']} | {r['requests']} | {r['answered_200']} | {r['same_text']} | "
              f"{r['audio_seconds_per_second']} | {r['latency_p50']} / {r['latency_p90']} / {r['latency_p99']} / "
              f"{r['latency_max']} |")
    print(f"| {offline['condition']} | {len(files)} | | | {offline['audio_seconds_per_second']} | |")
    print(f"\nserver peak RSS {rss:.2f} GB; mean requests per batch {result['mean_requests_per_batch']}")
    plot(rows, seq, conc, out / "serve-load.png")
    return 1 if lost else 0


def plot(rows, seq, conc, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for row, run in zip(rows, (seq, conc)):
        lat = np.sort([r["latency"] for r in run["records"]])
        ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat),
                label=f"{row['condition']}: {row['audio_seconds_per_second']} s audio/s")
    ax.set_xlabel("latency (s)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("xasr serve: latency under load")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
