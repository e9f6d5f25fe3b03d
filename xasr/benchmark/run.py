"""Run a benchmark: every system over every test set, once, sequentially, with the same threads.

In: a :class:`BenchmarkConfig` (system specs, ``NAME=PATH`` test sets, normalizers, reference
system, threads). Out, in ``out_dir``:

    benchmark.md / benchmark.json / benchmark.png   the table, everything in it, the plot
    recogs-/errs-/wer-{set}-{system}.txt             scoring details (xasr.scoring.wer.write_results)
    hyps-{set}-{system}.txt                          the raw hypotheses, "id<TAB>text"

Each system is loaded once (timed as ``load_seconds``), decodes every set (timed: audio
loading, features and search, never the model loading), and is freed before the next one, so
systems never compete for the cores or for memory.
"""
from __future__ import annotations

import logging
import os
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from xasr.benchmark.chinese import simplified_converter, to_simplified, traditional_report
from xasr.benchmark.report import BenchmarkReport, Measurement, summarize, write_report
from xasr.benchmark.systems import RunSettings, make_system, parse_system_specs
from xasr.benchmark.testsets import TestSet, TestSetError, load_test_set, per_set_values
from xasr.errors import XasrError
from xasr.scoring.wer import score, write_results
from xasr.utils.named import parse_named

logger = logging.getLogger(__name__)


@dataclass
class BenchmarkConfig:
    systems: List[str]  # specs, see xasr.benchmark.systems
    sets: List[str]  # NAME=PATH
    out_dir: str = "exp/benchmark"
    normalizers: List[str] = field(default_factory=lambda: ["auto"])  # one for all, or NAME=NORMALIZER
    languages: List[str] = field(default_factory=list)  # empty, one for all, or NAME=CODE
    reference: Optional[str] = None  # system the others are tested against; default: the first
    threads: int = 2
    device: str = "cpu"
    models_dir: Optional[str] = None
    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    max_utts: Optional[int] = None  # only the first N utterances of each set (quick checks)
    convert_traditional: bool = False  # score Chinese hypotheses after opencc t2s conversion
    command: str = ""  # the command line, recorded in the report


def _hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs"


def _load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _rss_bytes() -> Optional[int]:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PeakRss:
    """Samples this process's resident memory every ``interval`` s in a thread while the block
    runs; ``peak_gb`` is the highest sample (None where /proc is not available)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak: Optional[int] = None
        self._stop = threading.Event()

    def _sample(self) -> None:
        v = _rss_bytes()
        if v is not None:
            self.peak = v if self.peak is None else max(self.peak, v)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "PeakRss":
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def peak_gb(self) -> Optional[float]:
        return None if self.peak is None else self.peak / 1024 ** 3


def load_sets(cfg: BenchmarkConfig) -> List[TestSet]:
    named = parse_named(cfg.sets, "--sets")
    if not named:
        raise TestSetError("no test set: give at least one --sets NAME=PATH")
    names = list(named)
    normalizers = per_set_values(cfg.normalizers or ["auto"], names, "--normalizer", "auto")
    languages = per_set_values(cfg.languages, names, "--language", None) if cfg.languages else {}
    return [load_test_set(n, named[n], normalizers[n], languages.get(n), cfg.max_utts) for n in names]


def _write_hyps(hyps: Dict[str, str], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for k in sorted(hyps):
            f.write(f"{k}\t{hyps[k]}\n")


def run_benchmark(cfg: BenchmarkConfig) -> BenchmarkReport:
    """Decode, score, test and report (see the module docstring); returns the report."""
    if cfg.threads < 1:
        raise XasrError(f"--threads must be at least 1, got {cfg.threads}")
    specs = parse_system_specs(cfg.systems)  # every spec is checked before anything loads
    names = [s.name for s in specs]
    reference = cfg.reference or names[0]
    if reference not in names:
        raise XasrError(f"reference system {reference!r} is not among the systems: {', '.join(names)}")
    sets = load_sets(cfg)
    convert = simplified_converter() if cfg.convert_traditional else None
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for t in sets:
        logger.info("test set %s: %d utterances, %.1f s of audio, normalizer %s (%s), language %s (%s)", t.name,
                    t.num_utts, t.audio_seconds, t.normalizer, t.unit, t.language, t.how)

    import torch

    torch.set_num_threads(cfg.threads)
    load_before = _load_average()
    settings = RunSettings(threads=cfg.threads, device=cfg.device, models_dir=cfg.models_dir)
    measurements: List[Measurement] = []
    systems_info = []
    for spec in specs:
        system = make_system(spec, settings)
        logger.info("system %s: loading (%s)", spec.name, spec.text)
        t0 = time.perf_counter()
        details = system.load()
        load_s = time.perf_counter() - t0
        logger.info("system %s: loaded in %.1f s", spec.name, load_s)
        systems_info.append({"name": spec.name, "kind": spec.kind, "spec": spec.text, "path": spec.path,
                             "options": dict(spec.options), "load_seconds": round(load_s, 3), "details": details})
        for t in sets:
            t0, c0 = time.perf_counter(), time.process_time()
            with PeakRss() as rss:
                hyps = system.transcribe(t.cuts, t.language)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            _write_hyps(hyps, out / f"hyps-{t.name}-{spec.name}.txt")
            notes = []
            if t.normalizer == "chinese_char":
                trad = traditional_report(hyps)
                if trad["chars"]:
                    notes.append(f"{trad['chars']} of {trad['cjk_chars']} hypothesis Han characters (in "
                                 f"{trad['utterances']} utterances) are traditional forms, e.g. "
                                 f"{' '.join(trad['examples'][:6])}; "
                                 + ("converted to simplified with opencc before scoring" if convert else
                                    "scored as they are (they count as errors against simplified references)"))
                if convert:
                    hyps = to_simplified(hyps, convert)
            result = score(t.refs, hyps, t.normalizer)
            write_results(result, out, t.name, method=spec.name)
            if result.missing_ids:
                notes.append(f"{len(result.missing_ids)} utterance(s) without a hypothesis, scored as deletions")
            m = Measurement(system=spec.name, set_name=t.name, result=result, decode_seconds=wall,
                            audio_seconds=t.audio_seconds, cpu_seconds=cpu, notes=notes,
                            peak_rss_gb=rss.peak_gb, work=system.decode_work())
            measurements.append(m)
            logger.info("%s %s: %.2f%% %s, RTF %.3f (%.1f s of audio per second)", t.name, spec.name,
                        100 * result.error_rate, result.unit, wall / max(t.audio_seconds, 1e-9),
                        t.audio_seconds / max(wall, 1e-9))
        system.unload()

    rows = summarize(measurements, reference=reference, n_resamples=cfg.resamples, confidence=cfg.confidence,
                     seed=cfg.seed)
    report_notes = []
    if convert:
        report_notes.append("Chinese hypotheses were converted from traditional to simplified characters "
                            "(opencc t2s) before scoring")
    report = BenchmarkReport(
        rows=rows, systems=systems_info, sets=[t.info() for t in sets],
        settings={"reference": reference, "threads": cfg.threads, "device": cfg.device, "resamples": cfg.resamples,
                  "confidence": cfg.confidence, "seed": cfg.seed, "max_utts": cfg.max_utts,
                  "convert_traditional": cfg.convert_traditional, "hardware": _hardware(),
                  "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "load_average": f"{load_before} before, {_load_average()} after (1/5/15 min)",
                  "command": cfg.command, "out_dir": str(out)},
        notes=report_notes)
    paths = write_report(report, out)
    logger.info("benchmark report: %s, %s, %s", paths["markdown"], paths["json"], paths["plot"])
    return report
