"""Synthesize a small corpus in the Aishell-1 or LibriSpeech release layout.

Usage:
  xasr synth-corpus --corpus aishell --out-dir download/aishell_synth --train-hours 1.0 --seed 0
  xasr synth-corpus --corpus librispeech --out-dir download/librispeech_synth --train-hours 0.5 \
      --dev-hours 0.1 --test-hours 0.1 --jobs 2
"""
from __future__ import annotations

import argparse
import json

from xasr.corpora.synth import (CORPORA, EVAL_HOURS, SEEN_HOURS, SynthConfig, TrainAcoustics, default_sizes,
                             synthesize_corpus)
from xasr.errors import XasrError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", choices=CORPORA, required=True)
    p.add_argument("--out-dir", required=True, help="corpus root to create (must not exist)")
    p.add_argument("--train-hours", type=float, default=1.0)
    p.add_argument("--dev-hours", type=float, default=None, help=f"default: {EVAL_HOURS}, whatever --train-hours")
    p.add_argument("--test-hours", type=float, default=None, help=f"default: {EVAL_HOURS}, whatever --train-hours")
    p.add_argument("--seen-hours", type=float, default=SEEN_HOURS,
                   help="training voices reading unseen text (test_seen / test-seen); 0: none")
    p.add_argument("--train-speakers", type=int, default=None, help="default: 30 per training hour")
    p.add_argument("--eval-speakers", type=int, default=None, help="speakers in dev and in test each")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="parallel synthesis processes")
    p.add_argument("--no-noise", action="store_true", help="no background noise (default: 20-40 dB SNR)")
    g = p.add_argument_group("more acoustic variety in the training split only (dev, test, seen unchanged)")
    g.add_argument("--train-snr", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                   help="background-noise SNR range of the training utterances in dB (default: as the others)")
    g.add_argument("--reverb-share", type=float, default=0.0,
                   help="share of training utterances in a simulated room (RT60 0.2-0.8 s)")
    g.add_argument("--telephone-share", type=float, default=0.0,
                   help="share of training utterances band-limited to 300-3400 Hz")


def run(args: argparse.Namespace) -> int:
    sizes = default_sizes(args.corpus, args.train_hours, seen_hours=args.seen_hours)
    if args.dev_hours is not None:
        sizes["dev"].hours = args.dev_hours
    if args.test_hours is not None:
        sizes["test"].hours = args.test_hours
    if args.train_speakers is not None:
        sizes["train"].speakers = args.train_speakers
    if args.eval_speakers is not None:
        sizes["dev"].speakers = sizes["test"].speakers = args.eval_speakers
    for name in ("reverb_share", "telephone_share"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise XasrError(f"--{name.replace('_', '-')} must be in [0, 1], not {getattr(args, name)}")
    if args.train_snr is not None and args.train_snr[0] > args.train_snr[1]:
        raise XasrError(f"--train-snr: LOW {args.train_snr[0]} is above HIGH {args.train_snr[1]}")
    acoustics = None
    if args.train_snr is not None or args.reverb_share > 0 or args.telephone_share > 0:
        acoustics = TrainAcoustics(snr_db=tuple(args.train_snr) if args.train_snr else None,
                                   reverb_share=args.reverb_share, telephone_share=args.telephone_share)
    cfg = SynthConfig(corpus=args.corpus, out_dir=args.out_dir, seed=args.seed, sizes=sizes,
                      jobs=args.jobs, snr_db=None if args.no_noise else (20.0, 40.0), train_acoustics=acoustics)
    summary = synthesize_corpus(cfg)
    print(json.dumps(summary, ensure_ascii=False))
    return 0
