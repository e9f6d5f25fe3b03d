"""Pictures of scores for reports a person reads.

In: :class:`~xasr.scoring.wer.ScoreResult` objects keyed by a label (a system, a decoding
method or a test set). Out: an image file (PNG, PDF or SVG by the path's suffix).

    plot_error_breakdown({"greedy": r1, "beam-4": r2}, "exp/decode/errors-test.png")

Drawn with matplotlib's Agg canvas directly, so no display and no global pyplot state.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple, Union

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xasr.scoring.wer import ScoreResult

# (kind, legend label, colour)
_PARTS = (("sub", "substitutions", "#4c72b0"), ("del", "deletions", "#dd8452"),
          ("ins", "insertions", "#55a868"))


def plot_error_breakdown(results: Dict[str, ScoreResult], path: Union[str, Path],
                         title: Optional[str] = None) -> Path:
    """Stacked bars of substitution, deletion and insertion rates (% of reference tokens).

    One bar per entry of ``results``, in the given order; each bar's height is the total error
    rate, printed above it. The y axis says %WER or %CER (``%error`` when the units differ), and
    the normalizer names go in the caption. Returns the written path.
    """
    if not results:
        raise ValueError("nothing to plot: results is empty")
    labels = list(results)
    units = {r.unit for r in results.values()}
    normalizers = sorted({r.normalizer for r in results.values()})
    unit = units.pop() if len(units) == 1 else "error"

    fig = Figure(figsize=(max(4.0, 1.0 + 0.9 * len(labels)), 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = list(range(len(labels)))
    bottom = [0.0] * len(labels)
    for kind, legend, colour in _PARTS:
        heights = [100.0 * results[k].rate(kind) for k in labels]
        ax.bar(x, heights, bottom=bottom, color=colour, label=legend, width=0.6)
        bottom = [b + h for b, h in zip(bottom, heights)]
    top = max(bottom) if max(bottom) > 0 else 1.0
    for xi, total in zip(x, bottom):
        ax.text(xi, total + 0.01 * top, f"{total:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, top * 1.35)  # room for the legend above the bars
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30 if len(labels) > 4 else 0,
                       ha="right" if len(labels) > 4 else "center")
    ax.set_ylabel(f"%{unit}")
    ax.set_title(title or f"%{unit} by error type")
    ax.legend(loc="upper center", ncol=3, fontsize=8, frameon=False)
    fig.text(0.01, 0.01, "normalizer: " + ", ".join(normalizers), fontsize=7, color="0.4")
    fig.tight_layout(rect=(0, 0.03, 1, 1))

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def plot_weight_grid(table: Dict[Tuple[float, float], float], unit: str, references: Dict[str, float],
                     path: Union[str, Path], title: str) -> Path:
    """Error rate (%) against a decoding's CTC weight, one line per length bonus, with
    horizontal lines at ``references`` ({label: error rate}). ``table``: {(weight, bonus): rate}."""
    fig = Figure(figsize=(6.0, 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    weights = sorted({w for w, _ in table})
    for b in sorted({b for _, b in table}):
        ax.plot(weights, [table[(w, b)] for w in weights], marker="o", markersize=3, label=f"bonus {b:g}")
    for (label, value), style in zip(references.items(), ("--", ":", "-.")):
        ax.axhline(value, color="0.4", linestyle=style, label=f"{label} {value:.2f}")
    ax.set_xlabel("CTC weight w (the LLM's: 1 - w)")
    ax.set_ylabel(f"%{unit}")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
