"""Benchmark statistics and reports: error rates with confidence intervals, speeds, paired tests.

In: one :class:`Measurement` per (system, test set): the :class:`~xasr.scoring.wer.ScoreResult`
and the decoding time. Out: :class:`Row` objects (:func:`summarize`), and from a
:class:`BenchmarkReport` the files ``benchmark.md``, ``benchmark.json`` and ``benchmark.png``
(:func:`write_report`).

Statistics (all from :mod:`xasr.scoring.stats`, utterances as the resampling unit):

  - ``ci_low``/``ci_high``: percentile bootstrap interval of the error rate;
  - ``p_bootstrap``: one-sided paired bootstrap p-value that the system is NOT better than the
    reference system (small: the system is better; identical systems give 1.0);
  - ``mapsswe_z``/``p_mapsswe``: matched-pairs test, two-sided (z > 0: the system makes fewer
    errors than the reference).

Speed: ``rtf`` = decoding seconds / audio seconds (lower is faster), ``speed`` = audio seconds
per decoding second (its inverse). Model loading is reported separately, never in these.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from xasr.errors import XasrError
from xasr.scoring.stats import mapsswe_test, paired_bootstrap_test
from xasr.scoring.wer import ScoreResult, kaldi_line


@dataclass
class Measurement:
    system: str
    set_name: str
    result: ScoreResult
    decode_seconds: float
    audio_seconds: float
    cpu_seconds: Optional[float] = None  # process CPU time while decoding (all threads)
    notes: List[str] = field(default_factory=list)
    peak_rss_gb: Optional[float] = None  # highest resident memory of the process while decoding
    work: Optional[Dict[str, float]] = None  # LLM work (llm_passes, output_tokens, ...) of xasr LLM systems


@dataclass
class Row:
    """One (system, test set) line of the benchmark table; rates are fractions."""

    system: str
    set_name: str
    normalizer: str
    unit: str
    num_utts: int
    num_ref: int
    num_sub: int
    num_del: int
    num_ins: int
    num_errors: int
    error_rate: float
    ci_low: float
    ci_high: float
    kaldi_line: str
    decode_seconds: float
    audio_seconds: float
    rtf: float
    speed: float  # audio seconds per second
    cpu_seconds: Optional[float] = None
    cpu_rtf: Optional[float] = None  # CPU seconds (all threads) per audio second
    reference: Optional[str] = None  # the system compared against (None for the reference itself)
    p_bootstrap: Optional[float] = None
    mapsswe_z: Optional[float] = None
    p_mapsswe: Optional[float] = None
    notes: List[str] = field(default_factory=list)
    peak_rss_gb: Optional[float] = None
    llm_passes: Optional[int] = None  # LLM forward passes, summed over the utterances of each batched call
    output_tokens: Optional[int] = None  # LLM output tokens
    accepted_draft_tokens: Optional[int] = None


def summarize(measurements: Sequence[Measurement], reference: Optional[str] = None, n_resamples: int = 1000,
              confidence: float = 0.95, seed: int = 0) -> List[Row]:
    """Rows with confidence intervals and paired tests against ``reference`` (default: the first
    system), in the order systems and sets first appear in ``measurements``."""
    if not measurements:
        raise XasrError("nothing to summarize: no measurements")
    systems = list(dict.fromkeys(m.system for m in measurements))
    reference = reference or systems[0]
    if reference not in systems:
        raise XasrError(f"reference system {reference!r} is not among the systems: {', '.join(systems)}")
    by_key = {(m.system, m.set_name): m for m in measurements}
    rows = []
    for m in measurements:
        r = m.result
        errors, lens = r.per_utt_errors(), r.per_utt_ref_lens()
        low, high = r.interval(confidence=confidence, n_resamples=n_resamples, seed=seed)
        row = Row(system=m.system, set_name=m.set_name, normalizer=r.normalizer, unit=r.unit, num_utts=len(r.utts),
                  num_ref=r.num_ref, num_sub=r.num_sub, num_del=r.num_del, num_ins=r.num_ins,
                  num_errors=r.num_errors, error_rate=r.error_rate, ci_low=low, ci_high=high,
                  kaldi_line=kaldi_line(r), decode_seconds=m.decode_seconds, audio_seconds=m.audio_seconds,
                  rtf=m.decode_seconds / max(m.audio_seconds, 1e-9),
                  speed=m.audio_seconds / max(m.decode_seconds, 1e-9), cpu_seconds=m.cpu_seconds,
                  cpu_rtf=None if m.cpu_seconds is None else m.cpu_seconds / max(m.audio_seconds, 1e-9),
                  notes=list(m.notes), peak_rss_gb=m.peak_rss_gb)
        if m.work:
            row.llm_passes, row.output_tokens = int(m.work["llm_passes"]), int(m.work["output_tokens"])
            row.accepted_draft_tokens = int(m.work.get("accepted_tokens", 0))
        ref = by_key.get((reference, m.set_name))
        if ref is not None and m.system != reference:
            if ref.result.ids != r.ids:
                raise XasrError(f"{m.system} and {reference} were not scored on the same utterances of "
                                f"{m.set_name}: they cannot be compared")
            ref_errors = ref.result.per_utt_errors()
            row.reference = reference
            row.p_bootstrap = paired_bootstrap_test(ref_errors, errors, lens, n_resamples=n_resamples, seed=seed)
            if len(r.utts) >= 2:
                row.mapsswe_z, row.p_mapsswe = mapsswe_test(ref_errors, errors)
        rows.append(row)
    return rows


@dataclass
class BenchmarkReport:
    rows: List[Row]
    systems: List[Dict[str, object]]  # name, spec, kind, load_seconds, details
    sets: List[Dict[str, object]]  # TestSet.info()
    settings: Dict[str, object]  # threads, device, reference, resamples, confidence, seed, hardware, command
    notes: List[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------

def _pct(x: float) -> str:
    return "inf" if math.isinf(x) else f"{100.0 * x:.2f}"


def _p(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if x >= 0.001 else "<0.001"


def _z(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return f"{x:+.2f}" if math.isfinite(x) else ("+inf" if x > 0 else "-inf")


def results_table(rows: Sequence[Row], reference: Optional[str] = None, confidence: float = 0.95) -> str:
    """The main Markdown table: one line per system and test set."""
    ref = reference or next((r.reference for r in rows if r.reference), None) or (rows[0].system if rows else "")
    conf = f"{100 * confidence:.0f}% CI"
    head = ["set", "system", "error %", conf, "sub", "del", "ins", "ref tokens", "RTF", "audio s/s", "CPU RTF",
            f"p bootstrap vs {ref}", f"MAPSSWE z / p vs {ref}"]
    lines = ["| " + " | ".join(head) + " |",
             "| --- | --- | " + " | ".join("---:" for _ in head[2:]) + " |"]
    for r in rows:
        mz = "-" if r.p_mapsswe is None else f"{_z(r.mapsswe_z)} / {_p(r.p_mapsswe)}"
        cells = [f"{r.set_name} ({r.unit})", r.system, _pct(r.error_rate), f"{_pct(r.ci_low)}-{_pct(r.ci_high)}",
                 str(r.num_sub), str(r.num_del), str(r.num_ins), str(r.num_ref), f"{r.rtf:.3f}", f"{r.speed:.1f}",
                 "-" if r.cpu_rtf is None else f"{r.cpu_rtf:.3f}",
                 _p(r.p_bootstrap) if r.system != ref else "(reference)", mz]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def work_table(rows: Sequence[Row]) -> List[str]:
    """Markdown lines of the decoding-work table (peak memory; for LLM decodings, forward passes
    per utterance and per output token, output tokens per second), or none without such figures."""
    if not any(r.peak_rss_gb is not None or r.llm_passes is not None for r in rows):
        return []
    out = ["## Decoding work", "",
           "Peak RSS: the highest resident memory of the benchmark process while the system decoded the set "
           "(sampled every 50 ms; models loaded earlier stay counted until they are unloaded). LLM passes: "
           "forward passes of the LLM summed over the utterances of each batched call.", "",
           "| set | system | peak RSS GB | LLM passes / utt | LLM passes / output token | output tokens / s "
           "| accepted draft tokens |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        rss = "-" if r.peak_rss_gb is None else f"{r.peak_rss_gb:.2f}"
        if r.llm_passes is None:
            llm = ["-", "-", "-", "-"]
        else:
            llm = [f"{r.llm_passes / max(1, r.num_utts):.1f}", f"{r.llm_passes / max(1, r.output_tokens):.2f}",
                   f"{r.output_tokens / max(r.decode_seconds, 1e-9):.1f}", str(r.accepted_draft_tokens or 0)]
        out.append(f"| {r.set_name} | {r.system} | {rss} | " + " | ".join(llm) + " |")
    return out + [""]


def to_markdown(report: BenchmarkReport) -> str:
    s = report.settings
    conf = float(s.get("confidence", 0.95))
    out = ["# Benchmark", "",
           f"Error rates in % (WER or CER by each set's normalizer), {100 * conf:.0f}% bootstrap confidence "
           f"intervals ({s.get('resamples')} resamples of utterances), real-time factor (RTF: decoding seconds "
           f"per audio second), audio seconds decoded per second and CPU RTF "
           f"(CPU seconds of all threads per audio second, less sensitive to other load on the machine), on "
           f"{s.get('threads')} thread(s), device "
           f"{s.get('device')}. Paired tests compare each system with the reference system "
           f"**{s.get('reference')}** on the same utterances: *p bootstrap* is the one-sided probability that the "
           "system is not better (Bisani & Ney); MAPSSWE is two-sided (z > 0: fewer errors than the reference).",
           "", results_table(report.rows, str(s.get("reference")), conf), ""]
    out += work_table(report.rows)
    out += ["## Systems", "", "| system | kind | spec | load s | details |", "| --- | --- | --- | ---: | --- |"]
    for sy in report.systems:
        details = ", ".join(f"{k}={v}" for k, v in dict(sy.get("details") or {}).items())
        out.append(f"| {sy['name']} | {sy['kind']} | `{sy['spec']}` | {float(sy.get('load_seconds', 0.0)):.1f} "
                   f"| {details} |")
    out += ["", "## Test sets", "", "| set | path | utterances | audio h | normalizer | unit | language | chosen |",
            "| --- | --- | ---: | ---: | --- | --- | --- | --- |"]
    for t in report.sets:
        out.append(f"| {t['name']} | `{t['path']}` | {t['num_utts']} | {float(t['audio_seconds']) / 3600:.3f} | "
                   f"{t['normalizer']} | {t['unit']} | {t['language']} | {t.get('chosen', '')} |")
    out += ["", "## Kaldi-style lines", "", "```"]
    out += [f"{r.set_name} {r.system}: {r.kaldi_line}" for r in report.rows]
    out += ["```", ""]
    notes = list(report.notes) + [f"{r.system} on {r.set_name}: {n}" for r in report.rows for n in r.notes]
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    out += ["## Settings", ""]
    for k in ("threads", "device", "hardware", "load_average", "torch", "date", "command", "out_dir"):
        if k in s:
            v = s[k]
            out.append(f"- {k}: `{v}`" if k == "command" else f"- {k}: {v}")
    out.append("")
    return "\n".join(out)


def to_json(report: BenchmarkReport) -> dict:
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    return clean({"settings": report.settings, "systems": report.systems, "sets": report.sets,
                  "results": [asdict(r) for r in report.rows], "notes": report.notes})


# ---------------------------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------------------------

def plot_benchmark(rows: Sequence[Row], path: Union[str, Path], title: Optional[str] = None,
                   confidence: float = 0.95) -> Path:
    """Two panels: error rate with confidence-interval bars, and RTF, grouped by test set with one
    bar per system. Drawn on matplotlib's Agg canvas (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not rows:
        raise XasrError("nothing to plot: no benchmark rows")
    systems = list(dict.fromkeys(r.system for r in rows))
    sets = list(dict.fromkeys(r.set_name for r in rows))
    units = {s: next(r.unit for r in rows if r.set_name == s) for s in sets}
    by_key = {(r.system, r.set_name): r for r in rows}
    width = 0.8 / len(systems)
    colours = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
               "#ccb974", "#64b5cd"]

    fig = Figure(figsize=(max(8.0, 3.0 + 1.2 * len(sets) * max(1, len(systems)) * 0.5), 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax_err, ax_rtf = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for i, system in enumerate(systems):
        xs, errs, lo, hi, rtfs = [], [], [], [], []
        for j, s in enumerate(sets):
            r = by_key.get((system, s))
            if r is None or not math.isfinite(r.error_rate):
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            errs.append(100 * r.error_rate)
            lo.append(max(0.0, 100 * (r.error_rate - r.ci_low)))
            hi.append(max(0.0, 100 * (r.ci_high - r.error_rate)))
            rtfs.append(r.rtf)
        colour = colours[i % len(colours)]
        ax_err.bar(xs, errs, width=width, color=colour, label=system, yerr=[lo, hi], capsize=3,
                   error_kw={"elinewidth": 1, "ecolor": "0.2"})
        ax_rtf.bar(xs, rtfs, width=width, color=colour, label=system)
    labels = [f"{s}\n(%{units[s]})" for s in sets]
    for ax in (ax_err, ax_rtf):
        ax.set_xticks(range(len(sets)))
        ax.set_xticklabels(labels)
    ax_err.set_ylabel("% error (WER or CER of the set)")
    ax_err.set_title(f"error rate, {100 * confidence:.0f}% bootstrap CI")
    finite = [r.rtf for r in rows if r.rtf > 0]
    if finite and max(finite) / min(finite) > 30:
        ax_rtf.set_yscale("log")
    ax_rtf.set_ylabel("real-time factor (lower is faster)")
    ax_rtf.set_title("decoding speed")
    ax_rtf.legend(fontsize=8, frameon=False, loc="best")
    normalizers = sorted({f"{r.set_name}: {r.normalizer}" for r in rows})
    fig.text(0.01, 0.01, "normalizer " + ", ".join(normalizers), fontsize=7, color="0.4")
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def write_report(report: BenchmarkReport, out_dir: Union[str, Path]) -> Dict[str, Path]:
    """``benchmark.md``, ``benchmark.json`` and ``benchmark.png`` in ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "benchmark.md", "json": out / "benchmark.json", "plot": out / "benchmark.png"}
    paths["markdown"].write_text(to_markdown(report), encoding="utf-8")
    paths["json"].write_text(json.dumps(to_json(report), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    plot_benchmark(report.rows, paths["plot"], confidence=float(report.settings.get("confidence", 0.95)))
    return paths
