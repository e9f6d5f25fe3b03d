"""Print cuts, hours and speakers per set of a recipe's data directory (run from the recipe dir).

Usage:
  python -m xasr.bin.data_summary --corpus aishell train dev test
"""
from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    from lhotse import CutSet

    p = argparse.ArgumentParser()
    p.add_argument("--corpus", required=True)
    p.add_argument("sets", nargs="+")
    args = p.parse_args()
    for name in args.sets:
        for d in ("data/fbank", "data/manifests"):
            path = Path(d) / f"{args.corpus}_cuts_{name}.jsonl.gz"
            if path.is_file():
                cuts = CutSet.from_file(path)
                hours = sum(c.duration for c in cuts) / 3600
                spk = len({s.speaker for c in cuts for s in c.supervisions})
                print(f"  {name:16s} {len(cuts):7d} cuts {hours:8.2f} h {spk:5d} speakers  ({path})")
                break


if __name__ == "__main__":
    main()
