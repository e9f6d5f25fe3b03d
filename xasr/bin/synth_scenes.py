"""Synthesize a speech-with-image corpus: scene pictures, sentences spoken about them, noisy copies.

Usage:
  xasr synth-scenes --out-dir download/scenes --train-hours 0.75 --seed 0 --jobs 2
  xasr synth-scenes --out-dir download/scenes_tiny --train-hours 0.02 --dev-scenes 20 --snrs=-5,0
  xasr synth-scenes --out-dir download/scenes_clean --no-masked --no-train-noisy --snrs 0
  xasr synth-scenes --out-dir download/scenes --manifests-only --manifest-dir data/manifests

Writes images/, audio/, scenes.json and manifests/scenes_cuts_{train,dev,test,train_noisy,
{dev,test}_noisy_<snr>,{dev,test}_masked}.jsonl.gz under --out-dir (see xasr/corpora/scenes_corpus.py).
--manifests-only rewrites the manifests of an existing corpus (e.g. after moving it).
"""
from __future__ import annotations

import argparse
import json

from xasr.corpora.scenes_corpus import ScenesConfig, synthesize_scenes_corpus, write_manifests
from xasr.errors import XasrError


def _snrs(text: str):
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--snrs wants comma-separated numbers such as 10,0,-5, not {text!r}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = ScenesConfig(out_dir="")
    p.add_argument("--out-dir", required=True, help="corpus root to create (must not exist)")
    p.add_argument("--train-hours", type=float, default=d.train_hours)
    p.add_argument("--dev-scenes", type=int, default=d.dev_scenes, help="dev utterances (one per scene)")
    p.add_argument("--test-scenes", type=int, default=d.test_scenes, help="test utterances (one per scene)")
    p.add_argument("--train-utts-per-scene", type=int, default=d.train_utts_per_scene)
    p.add_argument("--train-speakers", type=int, default=None, help="default: 30 per training hour")
    p.add_argument("--eval-speakers", type=int, default=d.eval_speakers, help="speakers in dev and in test each")
    p.add_argument("--snrs", type=_snrs, default=d.snrs_db, help="SNRs (dB) of the noisy dev/test copies, "
                   "comma-separated (default: 10,5,0,-5; write --snrs=-5,0 when the first is negative)")
    p.add_argument("--no-masked", action="store_true", help="no keyword-masked dev/test copies")
    p.add_argument("--masked-background-snr", type=float, default=d.masked_background_snr_db)
    p.add_argument("--masked-keyword-snr", type=float, default=d.masked_keyword_snr_db)
    p.add_argument("--no-train-noisy", action="store_true", help="no noisy copy of the training set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="parallel processes")
    p.add_argument("--manifest-dir", default=None, help="default: <out-dir>/manifests")
    p.add_argument("--manifests-only", action="store_true",
                   help="only rewrite the manifests of the existing corpus in --out-dir")


def run(args: argparse.Namespace) -> int:
    if args.manifests_only:
        written = write_manifests(args.out_dir, args.manifest_dir)
        print(json.dumps({k: str(v) for k, v in written.items()}))
        return 0
    if not args.snrs:
        raise XasrError("--snrs needs at least one value, e.g. --snrs 0")
    cfg = ScenesConfig(out_dir=args.out_dir, seed=args.seed, train_hours=args.train_hours,
                       dev_scenes=args.dev_scenes, test_scenes=args.test_scenes,
                       train_utts_per_scene=args.train_utts_per_scene, train_speakers=args.train_speakers,
                       eval_speakers=args.eval_speakers, snrs_db=args.snrs, masked=not args.no_masked,
                       masked_background_snr_db=args.masked_background_snr,
                       masked_keyword_snr_db=args.masked_keyword_snr, train_noisy=not args.no_train_noisy,
                       jobs=args.jobs, manifest_dir=args.manifest_dir)
    summary = synthesize_scenes_corpus(cfg)
    print(json.dumps(summary))
    return 0
