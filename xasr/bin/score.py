"""Score a hypothesis text file against a reference one (Kaldi "<id> <text>" lines).

Usage:
  xasr score data/test/text exp/transcribe/text --normalizer english_word --out-dir exp/score
  xasr score ref.txt hyp.txt --normalizer chinese_char --out-dir exp/score --name test-llm

Writes recogs-<name>.txt, errs-<name>.txt (per-utterance alignments, substitutions, deletions,
insertions, PER-WORD STATS) and wer-<name>.txt into --out-dir (xasr.scoring.wer) and prints the
%WER (%CER for chinese_char) line with its 95% bootstrap interval. An id of the hypotheses that
the references lack is an error; a reference without a hypothesis counts as all deletions (and
is named in a warning).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", help="reference Kaldi text file")
    p.add_argument("hyp", help="hypothesis Kaldi text file (e.g. the text file of xasr transcribe)")
    p.add_argument("--normalizer", default="english_word",
                   help="english_word, chinese_char, ... (xasr/scoring/normalize.py) [english_word]")
    p.add_argument("--out-dir", default=None, help="where to write the recogs / errs / wer files")
    p.add_argument("--name", default=None, help="set name in the file names (default: the hypothesis file's stem)")


def run(args: argparse.Namespace) -> int:
    from xasr.bin.options import check_normalizer
    from xasr.scoring.wer import kaldi_line, read_kaldi_text, score, write_results

    check_normalizer(args.normalizer)
    refs, hyps = read_kaldi_text(args.ref), read_kaldi_text(args.hyp)
    result = score(refs, hyps, args.normalizer)
    lo, hi = result.interval()
    print(f"{kaldi_line(result)}  95% CI [{100 * lo:.2f}, {100 * hi:.2f}]")
    if args.out_dir:
        name = args.name or Path(args.hyp).stem
        paths = write_results(result, args.out_dir, name)
        print(" ".join(str(p) for p in paths.values()))
    return 0
