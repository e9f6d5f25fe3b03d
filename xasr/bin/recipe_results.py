"""Write a recipe run's results JSON (budget, wall time per stage, peak memory, error rates with
95% intervals and RTFs of every method on every set) and print it as a table.

Usage:
  python -m xasr.bin.recipe_results --budget quick --main-method llm_rescore \
      --decode-summary exp/decode/summary.json --benchmark exp/benchmark/benchmark.json \
      --stage-log log/stages.tsv --usage-log log/usage.jsonl --out exp/results.json \
      --settings train_hours=4 speed_perturb=false --train-cuts data/fbank/aishell_cuts_train.jsonl.gz \
      --exp-dirs exp/stage1 exp/stage2
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from xasr.benchmark.recipe_results import recipe_results, run_description


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", required=True)
    p.add_argument("--main-method", required=True)
    p.add_argument("--decode-summary", type=Path, default=None)
    p.add_argument("--benchmark", type=Path, default=None)
    p.add_argument("--stage-log", type=Path, default=None)
    p.add_argument("--usage-log", type=Path, default=None)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--settings", nargs="*", default=[], metavar="NAME=VALUE", help="the run's recipe options")
    p.add_argument("--train-cuts", nargs="*", type=Path, default=[], help="the training cut manifests")
    p.add_argument("--exp-dirs", nargs="*", type=Path, default=[], help="training runs (their metrics.tsv)")
    args = p.parse_args(argv)
    res = recipe_results(args.budget, args.main_method, args.decode_summary, args.benchmark, args.stage_log,
                         args.usage_log, description=run_description(args.settings, args.train_cuts, args.exp_dirs))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    unit = res.get("unit") or "error"
    print(f"budget {res['budget']}: {res.get('wall_minutes', '?')} min, peak RSS {res.get('peak_rss_gb', '?')} GB "
          f"(main decoding: {res['main_method']})")
    for set_name, methods in res["sets"].items():
        for m, r in methods.items():
            lo, hi = r["ci95"]
            ci = f"[{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
            print(f"  {set_name:<16} {m:<32} {unit} {r['error']:6.2f} {ci:<16} RTF {r['rtf']:.3f}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
