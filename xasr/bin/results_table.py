"""Turn a decode summary.json into a Markdown table of error rates and speeds.

Usage:
  python -m xasr.bin.results_table exp/decode/summary.json exp/decode/results.md
"""
from __future__ import annotations

import json
import sys


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    rows = json.load(open(src))
    sets = list(dict.fromkeys(r["set_name"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    unit = rows[0]["unit"] if rows else "WER"
    lines = ["| method | " + " | ".join(f"{s} {unit} (%)" for s in sets) + " | RTF |",
             "| --- | " + " | ".join("---:" for _ in sets) + " | ---: |"]
    for m in methods:
        cells, rtfs = [], []
        for s in sets:
            r = next((r for r in rows if r["set_name"] == s and r["method"] == m), None)
            cells.append("-" if r is None else f"{100 * r['error_rate']:.2f}")
            if r is not None:
                rtfs.append(r["wall_seconds"] / max(1e-9, r["audio_seconds"]))
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {sum(rtfs) / max(1, len(rtfs)):.3f} |")
    lines.append("")
    lines += [r["kaldi_line"] + f"  ({r['set_name']}, {r['method']})" + (f" {r['note']}" if r.get("note") else "")
              for r in rows]
    open(dst, "w").write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
