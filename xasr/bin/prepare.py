"""Check a corpus directory and write lhotse cut manifests through lhotse's recipes.

Usage:
  xasr prepare --corpus aishell --corpus-dir download/aishell_synth --output-dir data/manifests
  xasr prepare --corpus librispeech --corpus-dir /data/LibriSpeech --output-dir data/manifests --jobs 8
  xasr prepare --corpus aishell --corpus-dir download --output-dir data/manifests --download
"""
from __future__ import annotations

import argparse

from xasr.data.prepare import download_corpus, prepare_manifests


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", choices=("aishell", "librispeech"), required=True)
    p.add_argument("--corpus-dir", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--download", action="store_true",
                   help="first fetch the real corpus into --corpus-dir with lhotse's downloader")


def run(args: argparse.Namespace) -> int:
    corpus_dir = args.corpus_dir
    if args.download:
        corpus_dir = str(download_corpus(args.corpus, corpus_dir))
    prepare_manifests(args.corpus, corpus_dir, args.output_dir, num_jobs=args.jobs)
    return 0
