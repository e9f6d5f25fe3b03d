"""The scaling table and plot from recipe runs' results JSON (xasr.benchmark.scaling).

Each run is a results file (``<work dir>/exp/results.json`` of ``bash recipes/<corpus>/run.sh``,
or a committed ``recipes/<corpus>/results/<budget>.json``); ``PATH@HOURS`` gives the hours of
training audio of a file written before results recorded them. benchmarks/scaling.sh runs the
recipe at several training hours and calls this.

Usage:
  python benchmarks/scaling.py exp/scaling/h1/exp/results.json exp/scaling/h2/exp/results.json \
      recipes/librispeech/results/full.json --out-dir exp/scaling --title "LibriSpeech (synthesized)"
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import List, Optional

from xasr.benchmark.scaling import plot_scaling, read_points, scaling_table
from xasr.errors import XasrError


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="results JSON files, PATH or PATH@HOURS")
    p.add_argument("--set", default=None, help="the test set [the one benchmarked against faster-whisper]")
    p.add_argument("--out-dir", type=Path, required=True, help="scaling.md and scaling.png go here")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    try:
        points = read_points(args.runs, args.set)
    except XasrError as e:
        print(f"scaling.py: {e}", file=sys.stderr)
        return 1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    table = scaling_table(points)
    command = "python benchmarks/scaling.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    (args.out_dir / "scaling.md").write_text(f"Command: `{command}`\n\n{table}", encoding="utf-8")
    plot_scaling(points, args.out_dir / "scaling.png", args.title)
    print(table)
    print(f"-> {args.out_dir / 'scaling.md'}, {args.out_dir / 'scaling.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
