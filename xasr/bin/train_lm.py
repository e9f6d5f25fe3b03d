"""Train an n-gram language model (interpolated Kneser-Ney, ARPA) for the CTC prefix search.

Usage:
  xasr train-lm --text download/librispeech_synth/lm-text.txt --tokens word --order 3 \\
      --exclude-cuts data/manifests/librispeech_cuts_dev-clean.jsonl.gz --out data/lm/word3.arpa
  xasr train-lm --cuts data/manifests/aishell_cuts_train.jsonl.gz --tokens char --order 4 --out data/lm/char4.arpa

Text comes from plain text files (one sentence per line, .gz allowed) and/or the transcripts of
cut manifests. Any sentence equal to a transcript of ``--exclude-cuts`` (the evaluation sets) is
dropped first, and the number dropped is reported, so no evaluation text reaches the LM. Prints
the LM's size and, for each excluded set, its perplexity and out-of-vocabulary rate there.
"""
from __future__ import annotations

import argparse
import gzip
import logging
import time
from pathlib import Path
from typing import Dict, List

from xasr.errors import XasrError

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text", nargs="*", default=[], help="text files, one sentence per line (.gz allowed)")
    p.add_argument("--cuts", nargs="*", default=[], help="cut manifests whose transcripts are training text")
    p.add_argument("--exclude-cuts", nargs="*", default=[],
                   help="cut manifests (dev / test) whose transcripts must not be in the LM's text")
    p.add_argument("--tokens", choices=("word", "char"), default="word")
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--out", required=True, help="the ARPA file to write (.arpa or .arpa.gz)")


def _read_text(path: Path) -> List[str]:
    if not path.is_file():
        raise XasrError(f"--text {path}: no such file")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise XasrError(f"--text {path}: not a readable UTF-8 text file ({e})") from e


def _transcripts(path: str, option: str) -> List[str]:
    from lhotse import CutSet

    from xasr.data.dataset import batch_texts

    if not Path(path).is_file():
        raise XasrError(f"{option} {path}: no such cut manifest")
    return [t for t in batch_texts(CutSet.from_file(path)) if t]


def run(args: argparse.Namespace) -> int:
    from xasr.decoding.ngram import tokenize, train_kneser_ney

    if args.order < 1:
        raise XasrError(f"--order must be at least 1, not {args.order}")
    if not args.text and not args.cuts:
        raise XasrError("give the LM's text with --text and/or --cuts")
    excluded: Dict[str, List[str]] = {Path(p).name: _transcripts(p, "--exclude-cuts") for p in args.exclude_cuts}
    held = {" ".join(t.split()) for ts in excluded.values() for t in ts}
    sentences: List[str] = []
    for p in args.text:
        sentences += _read_text(Path(p))
    for p in args.cuts:
        sentences += _transcripts(p, "--cuts")
    kept = [s for s in sentences if " ".join(s.split()) not in held]
    if not kept:
        raise XasrError("no sentence left to train the LM on")
    t0 = time.time()
    lm = train_kneser_ney((tokenize(s, args.tokens) for s in kept), args.order)
    out = lm.write_arpa(args.out)
    sizes = ", ".join(f"{len(t)} {k + 1}-grams" for k, t in enumerate(lm.probs))
    print(f"{out}: {args.tokens} {args.order}-gram from {len(kept)} sentences ({len(sentences) - len(kept)} "
          f"dropped as evaluation text); {sizes}; {time.time() - t0:.1f} s")
    for name, texts in excluded.items():
        toks = [tokenize(t, args.tokens) for t in texts]
        n = sum(len(t) + 1 for t in toks)
        oov = sum(1 for t in toks for w in t if w not in lm)
        print(f"  {name}: perplexity {lm.perplexity(toks):.1f}, OOV {100 * oov / max(n, 1):.2f}% "
              f"of {n} tokens")
    return 0
