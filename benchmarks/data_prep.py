"""Benchmark of the data stages: corpus synthesis and fbank extraction speed on this machine.

Usage:
  .venv/bin/python benchmarks/data_prep.py --corpus aishell --train-hours 1.0 --jobs 2
  .venv/bin/python benchmarks/data_prep.py --corpus librispeech --train-hours 1.0 --jobs 2

Prints seconds of audio per wall second for synthesis (every split) and for feature
extraction (every split, with and without speed perturbation of the training split), the
corpus size, and the command that produced the figures. Works in a temporary directory.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

from xasr.data.features import compute_fbank
from xasr.data.prepare import prepare_manifests
from xasr.corpora.synth import SynthConfig, default_sizes, synthesize_corpus
from xasr.utils.logging import setup_logging


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--corpus", choices=("aishell", "librispeech"), default="aishell")
    p.add_argument("--train-hours", type=float, default=1.0)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    setup_logging()
    with tempfile.TemporaryDirectory(prefix="xasr-bench-") as d:
        root = Path(d)
        cfg = SynthConfig(corpus=args.corpus, out_dir=str(root / "corpus"), seed=args.seed,
                          sizes=default_sizes(args.corpus, args.train_hours), jobs=args.jobs)
        synth = synthesize_corpus(cfg)
        t0 = time.time()
        splits = prepare_manifests(args.corpus, str(root / "corpus"), str(root / "m"), num_jobs=args.jobs)
        prep_wall = time.time() - t0
        fb = compute_fbank(args.corpus, str(root / "m"), str(root / "f"), list(splits), num_jobs=args.jobs)
        train = next(s for s in splits if s.startswith("train"))
        fb_sp = compute_fbank(args.corpus, str(root / "m"), str(root / "fsp"), [train], num_jobs=args.jobs,
                              speed_perturb=True)
    total_h = sum(synth["hours"].values())
    fb_audio = sum(s["hours"] for s in fb.values()) * 3600
    fb_wall = sum(s["wall_seconds"] for s in fb.values())
    print()
    print(f"command: {shlex.join([sys.executable] + sys.argv)}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, jobs={args.jobs}")
    print(f"corpus {args.corpus}: {total_h:.3f} h "
          f"(train {synth['hours']['train']:.3f} / dev {synth['hours']['dev']:.3f} / test {synth['hours']['test']:.3f}), "
          f"{sum(synth['utterances'].values())} utterances, "
          f"{sum(synth['speakers'].values())} speakers, {synth['size_mb']} MB")
    print(f"synthesis: {synth['synthesis_wall_seconds']} s wall = {synth['realtime_factor']:.0f} s of audio per second")
    print(f"manifests (checks + lhotse recipe): {prep_wall:.1f} s wall")
    print(f"fbank, all splits: {fb_wall:.1f} s wall = {fb_audio / fb_wall:.0f} s of audio per second")
    sp = fb_sp[train]
    print(f"fbank, {train} with speed perturbation (3x audio): {sp['wall_seconds']:.1f} s wall = "
          f"{sp['audio_seconds_per_second']:.0f} s of audio per second")


if __name__ == "__main__":
    main()
