"""Speed of the loop-free CIF against the frame-by-frame walk it replaced (forward + backward).

Usage:
  .venv/bin/python benchmarks/cif_speed.py [--batch 8] [--frames 135] [--dim 256] [--tokens 40] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.models.test_cif import walk_cif_fire  # noqa: E402  the reference walk lives with its test
from xasr.models.cif import cif_fire  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=135)  # a 2.7-s utterance of Whisper frames (20 ms)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--tokens", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    h = torch.randn(a.batch, a.frames, a.dim, requires_grad=True)
    raw = torch.rand(a.batch, a.frames, requires_grad=True)
    lens = torch.full((a.batch,), a.frames)
    tl = torch.full((a.batch,), a.tokens)
    times = {}
    for f in (walk_cif_fire, cif_fire) * 2:  # twice each: the second round is the figure
        t0 = time.perf_counter()
        for _ in range(a.repeats):
            out = f(h, raw * (a.tokens / raw.sum(1, keepdim=True)), lens, 1.0, target_lens=tl)
            out.fired.sum().backward()
        times[f.__name__] = (time.perf_counter() - t0) / a.repeats
    print(" ".join(sys.argv))
    for name, t in times.items():
        print(f"{name}: {t * 1000:.1f} ms per forward+backward (B={a.batch}, T={a.frames}, D={a.dim}, N={a.tokens})")
    print(f"speed-up: {times['walk_cif_fire'] / times['cif_fire']:.1f}x")


if __name__ == "__main__":
    main()
