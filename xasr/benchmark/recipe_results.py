"""A recipe run's results as one JSON document: budget, wall time per stage, peak memory, and for
every set and method the error rate with its 95% interval and the real-time factor.

In: the decode summary of the recipe's decoding stage (``exp/decode/summary.json``: dev and
seen-voice sets, every decoding method), the benchmark report of its last stage
(``exp/benchmark/benchmark.json``: the test sets, the recipe's decodings and faster-whisper in
one run), the stage log the recipe writes (``log/stages.tsv``: ``<epoch seconds> TAB <stage or
"start"> TAB <message>``) and the cost of every xasr command (``log/usage.jsonl``, see
:mod:`xasr.utils.usage`). Out: a dict like::

    {"budget": "quick", "wall_minutes": 28.4, "peak_rss_gb": 2.3, "main_method": "llm_rescore",
     "stage_minutes": {"0": 1.2, ...},
     "sets": {"test-clean": {"llm_rescore": {"error": 38.2, "ci95": [35.0, 41.6], "rtf": 0.21}, ...}}}

Error rates and intervals are in percent, CER or WER as the recipe scores (``unit``). Optional
parts say what the run was, so runs can be compared (a scaling curve): ``settings`` (the recipe's
options, as given), ``train_audio_hours`` (the training cuts, speed-perturbed copies included) and
``training`` (per training stage: the steps and epochs made and the best validation loss, from
its ``metrics.tsv``).
"""
from __future__ import annotations

import csv
import gzip
import json
import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from xasr.errors import XasrError


def _pct(x: Optional[float]) -> Optional[float]:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return round(100.0 * float(x), 2)


def _entry(row: dict, rtf: float) -> dict:
    """Error rate and its interval in percent, and the RTF, of a decode-summary or benchmark row."""
    return {"error": _pct(row["error_rate"]), "ci95": [_pct(row.get("ci_low")), _pct(row.get("ci_high"))],
            "rtf": round(rtf, 4)}


def read_stage_log(path: Path, now: Optional[float] = None) -> Tuple[Optional[float], Dict[str, float]]:
    """(start of the latest run in epoch seconds, minutes per stage in that run) from ``stages.tsv``.
    A stage lasts from its first line to the next stage's first line (the last one: to ``now``)."""
    now = time.time() if now is None else now
    if not path.is_file():
        return None, {}
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            try:
                rows.append((float(parts[0]), parts[1]))
            except ValueError:
                continue
    starts = [i for i, (_, k) in enumerate(rows) if k == "start"]
    if not starts:
        return None, {}
    run = rows[starts[-1]:]
    begin = run[0][0]
    firsts: List[Tuple[float, str]] = []
    for t, k in run[1:]:
        if not firsts or firsts[-1][1] != k:
            firsts.append((t, k))
    minutes: Dict[str, float] = {}
    for i, (t, k) in enumerate(firsts):
        end = firsts[i + 1][0] if i + 1 < len(firsts) else now
        minutes[k] = round(minutes.get(k, 0.0) + (end - t) / 60.0, 2)
    return begin, minutes


def peak_rss_since(usage_path: Path, since: Optional[float]) -> Optional[float]:
    """The largest peak RSS (GB) of the xasr commands (and their worker processes) started at or
    after ``since``, from ``usage.jsonl``. The ranks of one torchrun launch (same run_id and
    command) ran at once: their peaks are summed."""
    if not usage_path.is_file():
        return None
    single: List[float] = []
    launches: Dict[tuple, float] = {}
    for line in usage_path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if since is not None and row.get("start", 0) < since:
            continue
        v = max(row.get("peak_rss_gb") or 0.0, row.get("children_peak_rss_gb") or 0.0)
        if row.get("world_size", 1) > 1:
            key = (row.get("run_id"), row.get("command"), tuple(row.get("args") or ()))
            launches[key] = launches.get(key, 0.0) + v
        else:
            single.append(v)
    peaks = single + list(launches.values())
    return round(max(peaks), 2) if peaks else None


def manifest_hours(paths: Sequence[Path]) -> float:
    """Hours of audio in lhotse cut manifests (``.jsonl.gz``), read without lhotse."""
    total = 0.0
    for p in paths:
        opener = gzip.open if str(p).endswith(".gz") else open
        try:
            with opener(p, "rt", encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        total += float(json.loads(line)["duration"])
        except (OSError, ValueError, KeyError) as e:
            raise XasrError(f"{p}: not a readable cut manifest ({e})") from e
    return round(total / 3600.0, 3)


def training_summary(exp_dir: Path) -> Optional[dict]:
    """Steps, epochs and best validation loss of a training run, from ``<exp_dir>/metrics.tsv``,
    and its time budget (``train.max_minutes`` of its ``config.yaml``)."""
    path = exp_dir / "metrics.tsv"
    if not path.is_file():
        return None
    steps, epochs, valid = 0, 0, []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            steps = max(steps, int(float(row.get("step") or 0)))
            epochs = max(epochs, int(float(row.get("epoch") or 0)))
            if row.get("valid_loss") and math.isfinite(float(row["valid_loss"])):  # nan: no validation set
                valid.append(float(row["valid_loss"]))
    out = {"steps": steps, "epochs": epochs, "best_valid_loss": round(min(valid), 4) if valid else None}
    cfg_path = exp_dir / "config.yaml"
    if cfg_path.is_file():
        from omegaconf import OmegaConf

        minutes = OmegaConf.select(OmegaConf.load(cfg_path), "train.max_minutes")
        if minutes is not None:
            out["max_minutes"] = minutes
    return out


def _setting_value(text: str):
    """A setting as given on the command line: a number or true/false where it is one."""
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def run_description(settings: Sequence[str] = (), train_cuts: Sequence[Path] = (),
                    exp_dirs: Sequence[Path] = ()) -> dict:
    """The optional parts of the results document: ``settings`` from ``NAME=VALUE`` strings,
    ``train_audio_hours`` and ``training`` (keyed by the experiment directory's name)."""
    out: dict = {}
    if settings:
        pairs = {}
        for kv in settings:
            name, sep, value = kv.partition("=")
            if not sep or not name:
                raise XasrError(f"a setting is NAME=VALUE, not {kv!r}")
            pairs[name] = _setting_value(value)
        out["settings"] = pairs
    if train_cuts:
        out["train_audio_hours"] = manifest_hours(train_cuts)
    training = {d.name: t for d in exp_dirs if (t := training_summary(d)) is not None}
    if training:
        out["training"] = training
    return out


def recipe_results(budget: str, main_method: str, decode_summary: Optional[Path], benchmark: Optional[Path],
                   stage_log: Optional[Path] = None, usage_log: Optional[Path] = None,
                   now: Optional[float] = None, description: Optional[dict] = None) -> dict:
    """The results document (see the module docstring); a missing input leaves its part out.
    ``description``: :func:`run_description`'s parts, stored after the budget."""
    sets: Dict[str, Dict[str, dict]] = {}
    unit = None
    if decode_summary is not None and decode_summary.is_file():
        for r in json.loads(decode_summary.read_text(encoding="utf-8")):
            unit = unit or r.get("unit")
            entry = _entry(r, r["wall_seconds"] / max(1e-9, r["audio_seconds"]))
            if r.get("note"):
                entry["note"] = r["note"]
            sets.setdefault(r["set_name"], {})[r["method"]] = entry
    if benchmark is not None and benchmark.is_file():
        for r in json.loads(benchmark.read_text(encoding="utf-8"))["results"]:
            unit = unit or r.get("unit")
            entry = _entry(r, float(r["rtf"]))
            for k in ("p_bootstrap", "peak_rss_gb"):
                if r.get(k) is not None:
                    entry[k] = r[k]
            sets.setdefault(r["set_name"], {})[r["system"]] = entry
    if not sets:
        raise XasrError(f"no results to report: neither {decode_summary} nor {benchmark} holds any")
    out: dict = {"budget": budget, "main_method": main_method, "unit": unit}
    out.update(description or {})
    begin, stage_minutes = read_stage_log(stage_log, now) if stage_log is not None else (None, {})
    if begin is not None:
        out["wall_minutes"] = round(((time.time() if now is None else now) - begin) / 60.0, 2)
        out["stage_minutes"] = stage_minutes
    if usage_log is not None:
        out["peak_rss_gb"] = peak_rss_since(usage_log, begin)
    out["sets"] = sets
    return out
