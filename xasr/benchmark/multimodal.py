"""Speech-with-image results: error rates per test set and decoding condition, with intervals and tests.

In: ``<decode-dir>/<condition>/recogs-<set>-<method>.txt`` (written by ``xasr decode``; the
scored tokens of every utterance) for each condition, the first condition being the reference
(speech only), and the cut manifests of the sets (their ``custom["keywords"]``: [word index,
word, kind] of the words the picture decides, see :mod:`xasr.corpora.scenes_corpus`).
Out: per set and condition a :class:`ConditionResult`: the WER with its 95% bootstrap interval,
the keyword error rate (substituted or deleted keywords over all keywords) with its interval,
and for every condition but the reference the one-sided paired bootstrap p-value that it is not
better than the reference (:func:`xasr.scoring.stats.paired_bootstrap_test`), on all words and on
the keywords; as a Markdown table (:func:`markdown`) and a plot (:func:`plot`).
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from xasr.errors import XasrError

CONDITION_LABELS = {"speech": "speech only", "image": "matching image", "shuffled": "shuffled image",
                    "none": "no image"}


@dataclass
class ConditionResult:
    set_name: str
    condition: str
    utterances: int
    words: int
    wer: float
    wer_ci: Tuple[float, float]
    keywords: int
    keyword_er: float
    keyword_ci: Tuple[float, float]
    p_wer: float = float("nan")  # vs the reference condition: p that this one is not better
    p_keyword: float = float("nan")
    rtf: float = float("nan")


def read_recogs(path: Path) -> Tuple[Dict[str, str], Dict[str, str]]:
    """``recogs-*.txt`` -> (refs, hyps), each {utterance id: scored tokens joined by spaces}."""
    if not path.is_file():
        raise XasrError(f"{path} does not exist: decode this set and condition first (xasr decode)")
    refs: Dict[str, str] = {}
    hyps: Dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        head, _, body = line.partition(":\t")
        kind, _, value = body.partition("=")
        if kind not in ("ref", "hyp"):
            raise XasrError(f"{path}: unexpected line {line[:80]!r}")
        (refs if kind == "ref" else hyps)[head] = " ".join(ast.literal_eval(value))
    return refs, hyps


def read_keywords(manifest: str) -> Dict[str, Tuple[List[str], List[int]]]:
    """{cut id: (transcript words, word indices of the keywords)} of a scenes manifest."""
    from lhotse import CutSet

    out = {}
    for c in CutSet.from_file(manifest):
        words = " ".join(s.text for s in c.supervisions if s.text).split()
        out[c.id] = (words, sorted(int(k[0]) for k in (c.custom or {}).get("keywords", [])))
    return out


def keyword_errors(result, keywords: Dict[str, Tuple[List[str], List[int]]]) -> Tuple[np.ndarray, np.ndarray]:
    """Per utterance of a ScoreResult: (keywords substituted or deleted, keywords)."""
    errors, counts = [], []
    for u in result.utts:
        if u.utt_id not in keywords:
            raise XasrError(f"utterance {u.utt_id} is not in the cut manifest given for its set")
        words, idx = keywords[u.utt_id]
        if list(u.ref) != [w.upper() for w in words]:
            raise XasrError(f"{u.utt_id}: the scored reference {' '.join(u.ref)!r} is not the transcript "
                            f"{' '.join(words)!r} word for word, so keyword positions cannot be found")
        aligned: List[str] = []  # the hypothesis token aligned to each reference word ("" = deleted)
        for r, h in u.alignment:
            if r is not None:
                aligned.append(h or "")
        errors.append(sum(1 for i in idx if aligned[i] != u.ref[i]))
        counts.append(len(idx))
    return np.asarray(errors, dtype=np.float64), np.asarray(counts, dtype=np.float64)


def evaluate(decode_dir: str, conditions: Sequence[str], cuts: Dict[str, str], method: str = "llm_greedy",
             resamples: int = 1000, seed: int = 0) -> List[ConditionResult]:
    """Every set x condition, in the given orders; the first condition is the reference."""
    from xasr.scoring.stats import bootstrap_ci, paired_bootstrap_test
    from xasr.scoring.wer import score

    rows: List[ConditionResult] = []
    for set_name, manifest in cuts.items():
        keywords = read_keywords(manifest)
        ref_errors = ref_kw_errors = None
        ids = None
        for k, cond in enumerate(conditions):
            cdir = Path(decode_dir) / cond
            refs, hyps = read_recogs(cdir / f"recogs-{set_name}-{method}.txt")
            result = score(refs, hyps, "none")  # the tokens are normalised already
            if ids is None:
                ids = result.ids
            elif result.ids != ids:
                raise XasrError(f"{set_name}: condition {cond} scored other utterances than {conditions[0]}")
            err, lens = result.per_utt_errors(), result.per_utt_ref_lens()
            kw_err, kw_n = keyword_errors(result, keywords)
            row = ConditionResult(
                set_name, cond, len(ids), int(lens.sum()), float(err.sum() / max(1.0, lens.sum())),
                bootstrap_ci(err, lens, resamples, seed=seed), int(kw_n.sum()),
                float(kw_err.sum() / max(1.0, kw_n.sum())),
                bootstrap_ci(kw_err, kw_n, resamples, seed=seed) if kw_n.sum() > 0 else (float("nan"),) * 2)
            if k == 0:
                ref_errors, ref_kw_errors = err, kw_err
            else:
                row.p_wer = paired_bootstrap_test(ref_errors, err, lens, resamples, seed=seed)
                if kw_n.sum() > 0:
                    row.p_keyword = paired_bootstrap_test(ref_kw_errors, kw_err, kw_n, resamples, seed=seed)
            row.rtf = _rtf(cdir / "summary.json", set_name, method)
            rows.append(row)
    return rows


def _rtf(summary: Path, set_name: str, method: str) -> float:
    if not summary.is_file():
        return float("nan")
    for s in json.loads(summary.read_text()):
        if s.get("set_name") == set_name and s.get("method") == method:
            return float(s["wall_seconds"]) / max(1e-9, float(s["audio_seconds"]))
    return float("nan")


def _pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.1f}"


def _p(x: float) -> str:
    return "-" if x != x else f"{x:.3f}"


def markdown(rows: Sequence[ConditionResult], resamples: int, method: str) -> str:
    lines = [f"Decoding: {method}. Error rates in %, with [95% bootstrap interval] over utterances "
             f"({resamples} resamples). p: one-sided paired bootstrap p-value that the condition is NOT "
             f"better than {CONDITION_LABELS.get(rows[0].condition, rows[0].condition) if rows else 'the reference'} "
             "(small p: the condition helps). Keywords: the words the picture decides (colour, shape, size, "
             "position, relation, count); a keyword counts as wrong when it is substituted or deleted.",
             "",
             "| set | condition | WER | p (WER) | keyword error rate | p (keywords) | RTF |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    last = None
    for r in rows:
        first = r.set_name != last
        last = r.set_name
        lines.append(
            f"| {r.set_name if first else ''} | {CONDITION_LABELS.get(r.condition, r.condition)} "
            f"| {_pct(r.wer)} [{_pct(r.wer_ci[0])}, {_pct(r.wer_ci[1])}] | {_p(r.p_wer)} "
            f"| {_pct(r.keyword_er)} [{_pct(r.keyword_ci[0])}, {_pct(r.keyword_ci[1])}] | {_p(r.p_keyword)} "
            f"| {'-' if r.rtf != r.rtf else f'{r.rtf:.3f}'} |")
    lines += ["", "| set | utterances | words | keywords |", "| --- | ---: | ---: | ---: |"]
    seen = set()
    for r in rows:
        if r.set_name not in seen:
            seen.add(r.set_name)
            lines.append(f"| {r.set_name} | {r.utterances} | {r.words} | {r.keywords} |")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[ConditionResult], path: str) -> Path:
    """Two panels (WER, keyword error rate): one group of bars per set, one bar per condition,
    with the 95% intervals as error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sets = list(dict.fromkeys(r.set_name for r in rows))
    conds = list(dict.fromkeys(r.condition for r in rows))
    by = {(r.set_name, r.condition): r for r in rows}
    fig = Figure(figsize=(max(6.0, 1.6 * len(sets) + 2.0) * 2, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    width = 0.8 / max(1, len(conds))
    colours = ["#4c72b0", "#55a868", "#c44e52", "#8172b2", "#937860"]
    for p, (name, get) in enumerate((("WER", lambda r: (r.wer, r.wer_ci)),
                                     ("keyword error rate", lambda r: (r.keyword_er, r.keyword_ci)))):
        ax = fig.add_subplot(1, 2, p + 1)
        for j, c in enumerate(conds):
            xs, ys, lo, hi = [], [], [], []
            for i, s in enumerate(sets):
                r = by.get((s, c))
                if r is None:
                    continue
                v, (a, b) = get(r)
                xs.append(i + (j - (len(conds) - 1) / 2) * width)
                ys.append(100 * v)
                lo.append(max(0.0, 100 * (v - a)) if a == a else 0.0)
                hi.append(max(0.0, 100 * (b - v)) if b == b else 0.0)
            ax.bar(xs, ys, width=width, color=colours[j % len(colours)], yerr=[lo, hi], capsize=3,
                   label=CONDITION_LABELS.get(c, c))
        ax.set_xticks(range(len(sets)))
        ax.set_xticklabels(sets, rotation=20 if len(sets) > 3 else 0, ha="right" if len(sets) > 3 else "center")
        ax.set_ylabel(f"{name} (%)")
        ax.set_title(f"{name}, 95% bootstrap intervals")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
