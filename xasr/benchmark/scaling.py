"""Error against training data and compute, from several recipe runs' results JSON.

In: the ``exp/results.json`` of recipe runs that differ in training hours or budget
(:mod:`xasr.benchmark.recipe_results`; its ``settings``, ``train_audio_hours`` and ``training``
parts say what each run was). Out: one point per run for a test set (the set the recipe's last
stage benchmarked against faster-whisper unless named): the error of the main decoding and of the
CTC head with their 95% intervals, faster-whisper's from the same benchmark run, the hours of
training audio and the wall time; a Markdown table and a plot of both curves (error against hours
of training audio, and against wall minutes), faster-whisper as a horizontal line.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from xasr.errors import XasrError

WHISPER_PREFIX = "faster-whisper"


@dataclass
class ScalingPoint:
    name: str  # the run (its results file's directory, or the file's stem)
    budget: str
    unit: str
    set_name: str
    train_hours: Optional[float]  # the recipe's --train-hours (synthesized speech), when recorded
    audio_hours: float  # hours of training audio read (speed-perturbed copies included)
    wall_minutes: Optional[float]
    main_method: str
    main: dict  # {"error", "ci95", "rtf"} of the main decoding
    ctc: Optional[dict]  # ctc_greedy's, when the run decoded with it
    whisper: Optional[dict]  # faster-whisper's row of the same benchmark run
    whisper_name: Optional[str]
    stage_steps: dict  # training stage -> steps made


def _run_name(path: Path) -> str:
    # <run>/exp/results.json -> <run>; results/full.json -> full
    if path.name == "results.json" and path.parent.name == "exp":
        return path.parent.parent.name
    return path.stem


def _bench_set(sets: dict, path: Path) -> str:
    with_whisper = [s for s, methods in sets.items() if any(m.startswith(WHISPER_PREFIX) for m in methods)]
    if len(with_whisper) != 1:
        raise XasrError(f"{path}: name the test set (--set): sets with a faster-whisper row: "
                        f"{with_whisper or 'none'}")
    return with_whisper[0]


def read_point(path: Path, set_name: Optional[str] = None, audio_hours: Optional[float] = None) -> ScalingPoint:
    """One run's point; ``audio_hours`` stands in for a results file written before it recorded them."""
    try:
        res = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise XasrError(f"{path}: not a readable results JSON ({e})") from e
    sets = res.get("sets") or {}
    name = set_name or _bench_set(sets, path)
    if name not in sets:
        raise XasrError(f"{path}: no set {name!r} (sets: {', '.join(sets) or 'none'})")
    methods = sets[name]
    main_method = res.get("main_method")
    if main_method not in methods:
        raise XasrError(f"{path}: the main decoding {main_method!r} has no row on {name}")
    hours = audio_hours if audio_hours is not None else res.get("train_audio_hours")
    if hours is None:
        raise XasrError(f"{path}: the hours of training audio are not recorded; give them as {path}@HOURS")
    whisper = sorted(m for m in methods if m.startswith(WHISPER_PREFIX))
    return ScalingPoint(
        name=_run_name(Path(path)), budget=str(res.get("budget", "?")), unit=str(res.get("unit") or "error"),
        set_name=name, train_hours=(res.get("settings") or {}).get("train_hours"), audio_hours=float(hours),
        wall_minutes=res.get("wall_minutes"), main_method=main_method, main=methods[main_method],
        ctc=methods.get("ctc_greedy"), whisper=methods[whisper[0]] if whisper else None,
        whisper_name=whisper[0] if whisper else None,
        stage_steps={k: v.get("steps") for k, v in (res.get("training") or {}).items()})


def parse_run_spec(spec: str) -> "tuple[Path, Optional[float]]":
    """``PATH`` or ``PATH@HOURS`` (hours of training audio for a file that does not record them)."""
    path, sep, hours = spec.rpartition("@")
    if not sep:
        return Path(spec), None
    try:
        return Path(path), float(hours)
    except ValueError:
        raise XasrError(f"{spec}: the hours after @ must be a number") from None


def read_points(specs: Sequence[str], set_name: Optional[str] = None) -> List[ScalingPoint]:
    """The runs' points, by hours of training audio; every run must score the same set in the same unit."""
    points = [read_point(p, set_name, h) for p, h in map(parse_run_spec, specs)]
    if not points:
        raise XasrError("no runs given")
    if len({(p.set_name, p.unit) for p in points}) > 1:
        raise XasrError("the runs score different sets or units: " +
                        ", ".join(f"{p.name}: {p.set_name} {p.unit}" for p in points))
    return sorted(points, key=lambda p: (p.audio_hours, p.wall_minutes or 0.0))


def _fmt(row: Optional[dict]) -> str:
    if not row or row.get("error") is None:
        return ""
    lo, hi = row.get("ci95") or (None, None)
    ci = f" [{lo:.1f}, {hi:.1f}]" if lo is not None and hi is not None else ""
    return f"{row['error']:.2f}{ci}"


def scaling_table(points: Sequence[ScalingPoint]) -> str:
    """A Markdown table, one row per run."""
    unit, set_name = points[0].unit, points[0].set_name
    lines = [f"| run | budget | --train-hours | training audio (h) | wall (min) | stage-1 / stage-2 steps "
             f"| {set_name} {points[0].main_method} {unit} (%) | ctc_greedy | faster-whisper |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for p in points:
        steps = " / ".join(str(p.stage_steps.get(k, "?")) for k in ("stage1", "stage2")) if p.stage_steps else ""
        lines.append(f"| {p.name} | {p.budget} | {'' if p.train_hours is None else p.train_hours} | "
                     f"{p.audio_hours:.2f} | {'' if p.wall_minutes is None else f'{p.wall_minutes:.1f}'} | {steps} | "
                     f"{_fmt(p.main)} | {_fmt(p.ctc)} | {_fmt(p.whisper)} |")
    return "\n".join(lines) + "\n"


def plot_scaling(points: Sequence[ScalingPoint], path: Path, title: str = "") -> None:
    """Error against hours of training audio (log scale) and against wall minutes, with 95%
    intervals; faster-whisper's error (from the last run's benchmark) as a horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unit = points[0].unit
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, xkey, xlabel in ((axes[0], "audio_hours", "hours of training audio (speed-perturbed copies included)"),
                             (axes[1], "wall_minutes", "wall time of the run from nothing (min)")):
        for label, key, style in ((points[0].main_method, "main", "o-"), ("ctc_greedy", "ctc", "s--")):
            rows = [(getattr(p, xkey), getattr(p, key)) for p in points
                    if getattr(p, xkey) is not None and getattr(p, key) and getattr(p, key).get("error") is not None]
            if not rows:
                continue
            xs = [x for x, _ in rows]
            ys = [r["error"] for _, r in rows]
            lo = [r["error"] - (r.get("ci95") or [r["error"]])[0] for _, r in rows]
            hi = [(r.get("ci95") or [None, r["error"]])[1] - r["error"] for _, r in rows]
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt=style, capsize=3, label=label)
        whisper = next((p for p in reversed(points) if p.whisper), None)
        if whisper is not None:
            ax.axhline(whisper.whisper["error"], color="gray", linestyle=":",
                       label=f"{whisper.whisper_name} ({whisper.whisper['error']:.1f})")
        if xkey == "audio_hours":
            from matplotlib.ticker import NullFormatter, ScalarFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xticks(sorted({round(p.audio_hours, 1) for p in points}))
        for p in points:  # name each run at its main decoding's point
            x = getattr(p, xkey)
            if x is not None and p.main.get("error") is not None:
                ax.annotate(p.name, (x, p.main["error"]), textcoords="offset points", xytext=(4, -12), fontsize=7)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{points[0].set_name} {unit} (%)")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["ScalingPoint", "read_point", "read_points", "parse_run_spec", "scaling_table", "plot_scaling"]
