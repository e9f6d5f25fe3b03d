"""Ablation table: decodings of the same set by a sequence of model variants, each compared with
the one before it (and with the first) on the same utterances.

Reads the ``recogs-{set}-{method}.txt`` that ``xasr decode`` wrote for each variant, scores them
again through :mod:`xasr.scoring` and prints a Markdown table: error rate with its 95% bootstrap
interval, the change against the previous row and the one-sided paired-bootstrap p-value that the
row is not better than the previous one (and than the first row). Writes ``ablation.md``,
``ablation.json`` and ``ablation.png`` to ``--out-dir``.

Usage:
  cd recipes/librispeech
  python ../../benchmarks/ablation.py --set dev-clean --method ctc_greedy --normalizer english_word \
      --rows "linear probe=exp/ab/base/decode" "contextual head=exp/ab/ctx/decode" \
      --out-dir exp/ab/ablation-ctc
  (a row may name its own method: "NAME=DIR:METHOD")
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import Dict, List, Tuple


def read_recogs(path: Path) -> Tuple[Dict[str, str], Dict[str, str]]:
    """(refs, hyps) by utterance id from a recogs file (token lists joined by spaces)."""
    refs, hyps = {}, {}
    for line in path.read_text(encoding="utf-8").splitlines():
        uid, _, rest = line.partition(":\t")
        kind, _, tokens = rest.partition("=")
        text = " ".join(ast.literal_eval(tokens))
        (refs if kind == "ref" else hyps)[uid] = text
    return refs, hyps


def main(argv: List[str] = None) -> int:
    from xasr.scoring.stats import bootstrap_ci, paired_bootstrap_test
    from xasr.scoring.wer import score

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--normalizer", required=True)
    p.add_argument("--rows", nargs="+", required=True, help="NAME=DECODE_DIR[:METHOD], in order")
    p.add_argument("--out-dir", required=True)
    args = p.parse_args(argv)

    rows = []
    for spec in args.rows:
        name, _, rest = spec.partition("=")
        d, _, method = rest.partition(":")
        method = method or args.method
        refs, hyps = read_recogs(Path(d) / f"recogs-{args.set}-{method}.txt")
        rows.append((name, method, refs, hyps))
    ids = sorted(rows[0][2])
    for name, _, refs, _ in rows[1:]:
        if sorted(refs) != ids:
            raise SystemExit(f"{name}: another set of utterances than {rows[0][0]}; compare on the same set")
    results = []
    for name, method, refs, hyps in rows:
        r = score(refs, hyps, args.normalizer)
        order = {u: i for i, u in enumerate(r.ids)}
        idx = [order[u] for u in ids]
        results.append({"name": name, "method": method, "unit": r.unit, "error": 100 * r.error_rate,
                        "errors": r.per_utt_errors()[idx], "lens": r.per_utt_ref_lens()[idx]})
    table = [f"| variant | {results[0]['unit']} (%) [95% CI] | vs previous | p (not better than previous) "
             f"| p (not better than the first) |", "| --- | ---: | ---: | ---: | ---: |"]
    out_rows = []
    for i, res in enumerate(results):
        lo, hi = bootstrap_ci(res["errors"], res["lens"])
        row = {"variant": res["name"], "method": res["method"], "error": round(res["error"], 2),
               "ci95": [round(100 * lo, 2), round(100 * hi, 2)]}
        cells = ["-", "-", "-"]
        if i > 0:
            prev = results[i - 1]
            p_prev = paired_bootstrap_test(prev["errors"], res["errors"], res["lens"])
            p_first = paired_bootstrap_test(results[0]["errors"], res["errors"], res["lens"])
            row.update(delta=round(res["error"] - prev["error"], 2), p_vs_previous=p_prev, p_vs_first=p_first)
            cells = [f"{row['delta']:+.2f}", f"{p_prev:.3f}", f"{p_first:.3f}"]
        out_rows.append(row)
        table.append(f"| {res['name']} ({res['method']}) | {row['error']:.2f} [{row['ci95'][0]:.1f}, "
                     f"{row['ci95'][1]:.1f}] | " + " | ".join(cells) + " |")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = "\n".join(table) + "\n"
    (out / "ablation.md").write_text(md, encoding="utf-8")
    (out / "ablation.json").write_text(json.dumps({"set": args.set, "normalizer": args.normalizer,
                                                   "rows": out_rows}, indent=1) + "\n", encoding="utf-8")
    _plot(out_rows, results[0]["unit"], args.set, out / "ablation.png")
    print(md)
    print(f"command: python benchmarks/ablation.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    return 0


def _plot(rows, unit: str, set_name: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5, 1.3 * len(rows)), 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = range(len(rows))
    err = [r["error"] for r in rows]
    lo = [r["error"] - r["ci95"][0] for r in rows]
    hi = [r["ci95"][1] - r["error"] for r in rows]
    ax.bar(x, err, yerr=[lo, hi], capsize=4, color="#4c72b0")
    ax.set_xticks(list(x))
    ax.set_xticklabels([r["variant"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"{unit} (%) on {set_name}, 95% CI")
    for i, e in enumerate(err):
        ax.text(i, e / 2, f"{e:.1f}", ha="center", color="white", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
