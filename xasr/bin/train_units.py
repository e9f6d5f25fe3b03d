"""Train sentencepiece text units on training transcripts.

Usage:
  xasr train-units --cuts data/manifests/aishell_cuts_train.jsonl.gz --lang-dir data/lang_char --type char
  xasr train-units --cuts data/manifests/librispeech_cuts_train-clean-100.jsonl.gz \
      --lang-dir data/lang_bpe_500 --type bpe --vocab-size 500
"""
from __future__ import annotations

import argparse

from xasr.data.units import train_units


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cuts", nargs="+", required=True, help="training cut manifests")
    p.add_argument("--lang-dir", required=True)
    p.add_argument("--type", choices=("char", "bpe", "unigram"), default="bpe")
    p.add_argument("--vocab-size", type=int, default=500, help="for bpe / unigram")


def run(args: argparse.Namespace) -> int:
    train_units(args.cuts, args.lang_dir, model_type=args.type, vocab_size=args.vocab_size)
    return 0
