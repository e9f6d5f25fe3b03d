"""Compute and store 80-dim fbank features for cut manifests, filtering unusable cuts.

Usage:
  xasr compute-fbank --corpus aishell --manifest-dir data/manifests --output-dir data/fbank \
      --splits train dev test --speed-perturb
  xasr compute-fbank ... --no-features   # only filter (and perturb): for encoders that read audio
"""
from __future__ import annotations

import argparse
import json

from xasr.data.features import FBANK_BINS, FilterConfig, compute_fbank


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", choices=("aishell", "librispeech"), required=True)
    p.add_argument("--manifest-dir", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--splits", nargs="+", required=True, help="e.g. train dev test, or LibriSpeech part names")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--speed-perturb", action="store_true", help="add 0.9x and 1.1x copies of training cuts")
    p.add_argument("--min-duration", type=float, default=1.0, help="training cuts shorter are dropped")
    p.add_argument("--max-duration", type=float, default=20.0, help="training cuts longer are dropped")
    p.add_argument("--num-mel-bins", type=int, default=FBANK_BINS)
    p.add_argument("--no-features", action="store_true",
                   help="write the filtered (and perturbed) cuts without features: Whisper reads the audio, "
                        "and a fbank model extracts them as it reads such cuts")


def run(args: argparse.Namespace) -> int:
    stats = compute_fbank(args.corpus, args.manifest_dir, args.output_dir, args.splits,
                          num_jobs=args.jobs, speed_perturb=args.speed_perturb,
                          filter_cfg=FilterConfig(args.min_duration, args.max_duration),
                          num_mel_bins=args.num_mel_bins, store_features=not args.no_features)
    print(json.dumps(stats))
    return 0
