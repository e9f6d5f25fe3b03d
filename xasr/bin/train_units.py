"""Train sentencepiece text units on training transcripts.

Usage:
  xasr train-units --cuts data/manifests/aishell_cuts_train.jsonl.gz --lang-dir data/lang_char --type char
  xasr train-units --cuts data/manifests/aishell_cuts_train.jsonl.gz --lang-dir data/lang_char --type char \
      --homophone-classes     # also data/lang_char/unit_classes.json, for model.unit_classes
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
    p.add_argument("--homophone-classes", action="store_true",
                   help="also write <lang-dir>/unit_classes.json: a class id per unit, shared by the characters "
                        "espeak-ng's Mandarin voice reads alike (model.unit_classes)")


def run(args: argparse.Namespace) -> int:
    import logging

    model = train_units(args.cuts, args.lang_dir, model_type=args.type, vocab_size=args.vocab_size)
    if args.homophone_classes:
        import json

        import sentencepiece as spm

        from xasr.decoding.homophones import homophone_classes

        sp = spm.SentencePieceProcessor(model_file=str(model))
        pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
        classes = homophone_classes(pieces)
        out = model.parent / "unit_classes.json"
        out.write_text(json.dumps(classes.tolist()) + "\n")
        logging.getLogger("xasr").info("%s: %d units in %d homophone classes", out, len(pieces),
                                       len(set(classes.tolist())))
    return 0
