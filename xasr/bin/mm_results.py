"""Speech-with-image results: error rates per test set and decoding condition, with intervals and tests.

Usage:
  cd recipes/multimodal
  xasr mm-results --decode-dir exp/decode --conditions speech image shuffled \
      --cuts test=data/manifests/scenes_cuts_test.jsonl.gz test_masked=data/manifests/scenes_cuts_test_masked.jsonl.gz \
      --out exp/results.md --plot exp/results.png

In and out: see :mod:`xasr.benchmark.multimodal` (``--out`` gets the Markdown table and the
same numbers as JSON next to it, ``--plot`` the PNG).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from xasr.benchmark.multimodal import evaluate, markdown, plot


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--decode-dir", required=True, help="holds one directory of xasr decode output per condition")
    p.add_argument("--conditions", nargs="+", default=["speech", "image", "shuffled"],
                   help="condition directories; the first is the reference of the p-values")
    p.add_argument("--cuts", nargs="+", required=True, help="NAME=PATH: the decoded sets' cut manifests")
    p.add_argument("--method", default="llm_greedy", help="decoding method (file name part)")
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="Markdown table; a .json with the same numbers goes next to it")
    p.add_argument("--plot", default=None, help="PNG of the error rates with intervals")


def run(args: argparse.Namespace) -> int:
    from xasr.utils.named import parse_named

    cuts = parse_named(args.cuts, "--cuts")
    rows = evaluate(args.decode_dir, args.conditions, cuts, args.method, args.resamples, args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(rows, args.resamples, args.method), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps([asdict(r) for r in rows], indent=1))
    if args.plot:
        plot(rows, args.plot)
    return 0
