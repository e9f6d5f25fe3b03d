"""Check a corpus directory and write lhotse cut manifests through lhotse's recipes.

Usage:
  xasr prepare --corpus aishell --corpus-dir download/aishell_synth --output-dir data/manifests
  xasr prepare --corpus librispeech --corpus-dir /data/LibriSpeech --output-dir data/manifests --jobs 8
  xasr prepare --corpus aishell --corpus-dir download --output-dir data/manifests --download
  xasr prepare --corpus aishell --corpus-dir download --download-only   # fetch, no manifests
"""
from __future__ import annotations

import argparse

from xasr.data.prepare import download_corpus, prepare_manifests


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", choices=("aishell", "librispeech"), required=True)
    p.add_argument("--corpus-dir", required=True)
    p.add_argument("--output-dir", default=None, help="where the manifests go (not needed with --download-only)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--download", action="store_true",
                   help="first fetch the real corpus into --corpus-dir with lhotse's downloader")
    p.add_argument("--download-only", action="store_true", help="fetch the real corpus and stop (no manifests)")


def run(args: argparse.Namespace) -> int:
    from xasr.errors import XasrError

    if not args.download_only and not args.output_dir:
        raise XasrError("--output-dir is needed (the manifests go there) unless --download-only")
    corpus_dir = args.corpus_dir
    if args.download or args.download_only:
        corpus_dir = str(download_corpus(args.corpus, corpus_dir))
    if args.download_only:
        return 0
    prepare_manifests(args.corpus, corpus_dir, args.output_dir, num_jobs=args.jobs)
    return 0
