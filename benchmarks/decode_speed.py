"""Benchmark of the decoding methods of a trained model: LLM passes, speed, memory, error rate.

Usage:
  cd recipes/librispeech && ../../.venv/bin/python ../../benchmarks/decode_speed.py \\
      --model-dir exp/stage2/model --cuts data/fbank/librispeech_cuts_test-clean.jsonl.gz
  cd recipes/aishell && ../../.venv/bin/python ../../benchmarks/decode_speed.py \\
      --model-dir exp/stage2/model --cuts data/fbank/aishell_cuts_test.jsonl.gz \\
      --methods llm_greedy llm_speculative llm_speculative@ctc --limit 40 --threads 2
  # with a reference system from xasr.benchmark (when that package is there):
  ... --system faster-whisper:whisper-base:int8

Prints, per method: the error rate (WER/CER through xasr.scoring.wer.score; the normalizer
comes from the supervisions' language unless --normalizer is given), batched LLM forward calls,
LLM forward passes per utterance and per output token (passes counted per row: a batched call
of B rows counts B), positions run per output token (padding included: on a CPU the cost of a
pass grows with them), the share of draft tokens accepted, LLM output tokens per second, the real-time factor, the
peak RSS of the process that ran it, and how many utterances equal ``llm_greedy``
("llm_speculative == llm_greedy on N/N utterances"), then the command that produced it.

Each method runs in its own process (so peak RSS is its own), after one warm-up batch that is
not timed; the model loading is not timed. ``METHOD@ctc`` decodes METHOD with the CTC head as
the draft (``model.speculative_draft=ctc``), ``METHOD@ctc_beam`` with the CTC prefix search's best
path; ``METHOD+units`` (also ``METHOD@ctc+units``) with the
LLM scoring only the tokens the units spell (``model.llm_vocab=units``), ``METHOD+full`` with its
whole vocabulary (the default is the model's own setting); a speculative method is compared with
``llm_greedy`` of the same vocabulary. Run it from the recipe directory: the manifests'
feature paths are relative to it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

DEFAULT_METHODS = ["llm_greedy", "llm_beam", "llm_speculative", "llm_fast", "cif_greedy", "ctc_greedy"]
LANGUAGE_NORMALIZERS = {"english": "english_word", "en": "english_word", "chinese": "chinese_char",
                        "mandarin": "chinese_char", "zh": "chinese_char"}
NORMALIZER_LANGUAGE = {"english_word": "en", "chinese_char": "zh"}


def _load_cuts(path: str, limit: int):
    from lhotse import CutSet

    cuts = CutSet.from_file(path).to_eager()
    return cuts.subset(first=limit) if limit > 0 else cuts


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_one(args: argparse.Namespace) -> Dict[str, object]:
    """Decode the cuts with one method (or one external system) in this process."""
    import torch

    from xasr.decoding.dataset_decode import decode_cuts

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cuts = _load_cuts(args.cuts, args.limit)
    audio = sum(c.duration for c in cuts)
    if args.one.startswith("system:"):
        from xasr.benchmark.systems import RunSettings, make_system, parse_system_spec

        system = make_system(parse_system_spec(args.one[len("system:"):]),
                             RunSettings(threads=args.threads, device=args.device, models_dir=args.models_dir))
        system.load()
        system.transcribe(cuts.subset(first=2), args.language)  # warm-up
        t0 = time.perf_counter()
        hyps = system.transcribe(cuts, args.language)
        wall = time.perf_counter() - t0
        return {"hyps": hyps, "wall": wall, "audio": audio, "rss_mb": _peak_rss_mb(), "stats": None}
    from xasr.model_dir import load_model_dir

    from xasr.decoding.methods import options_for
    from xasr.decoding.speculative import DecodeStats

    spec, _, vocab = args.one.partition("+")
    method, _, draft = spec.partition("@")
    model, cfg, units = load_model_dir(args.model_dir, models_dir=args.models_dir, device=args.device)
    opts = options_for(model, speculative_draft=draft or None, fast_path_threshold=args.fast_path_threshold,
                       llm_vocab=vocab or None)
    features = cfg.data.features
    # warm-up, two cuts (decode_cuts fails on one: lhotse's bucketing wants two buckets)
    decode_cuts(model, units, cuts.subset(first=2), method, features, args.max_duration, args.device, opts=opts)
    stats = DecodeStats()
    t0 = time.perf_counter()
    hyps = decode_cuts(model, units, cuts, method, features, args.max_duration, args.device, stats=stats, opts=opts)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return {"hyps": hyps, "wall": wall, "audio": audio, "rss_mb": _peak_rss_mb(),
            "stats": dict(vars(stats))}


def _child_command(args: argparse.Namespace, one: str, out: str) -> List[str]:
    cmd = [sys.executable, os.path.abspath(__file__), "--one", one, "--out", out, "--cuts", args.cuts,
           "--limit", str(args.limit), "--threads", str(args.threads), "--device", args.device,
           "--max-duration", str(args.max_duration), "--language", args.language or ""]
    if args.model_dir:
        cmd += ["--model-dir", args.model_dir]
    if args.models_dir:
        cmd += ["--models-dir", args.models_dir]
    if args.fast_path_threshold is not None:
        cmd += ["--fast-path-threshold", str(args.fast_path_threshold)]
    return cmd


def _normalizer(cuts, given: str) -> str:
    if given != "auto":
        return given
    from xasr.scoring.normalize import normalizer_for_language

    langs = {(s.language or "").strip().lower() for c in cuts for s in c.supervisions}
    if len(langs) != 1 or not next(iter(langs)):
        raise SystemExit(f"the supervisions name languages {sorted(langs)}: give --normalizer")
    lang = langs.pop()
    return LANGUAGE_NORMALIZERS.get(lang) or normalizer_for_language(lang)


def _fmt(x: Optional[float], spec: str) -> str:
    return "-" if x is None else format(x, spec)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", help="a trained xasr model directory")
    p.add_argument("--cuts", required=True, help="a cut manifest (paths inside relative to the working directory)")
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS,
                   help="decoding methods; METHOD@ctc drafts with the CTC head (@ctc_beam: its prefix search), METHOD+units scores only the "
                        "tokens the units spell (METHOD+full: all)")
    p.add_argument("--system", action="append", default=[],
                   help="an extra system spec for xasr.benchmark.systems, e.g. faster-whisper:whisper-base:int8")
    p.add_argument("--limit", type=int, default=0, help="only the first N cuts (0: all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-duration", type=float, default=60.0, help="seconds of audio per batch")
    p.add_argument("--normalizer", default="auto", help="auto (from the supervisions' language) or a normalizer name")
    p.add_argument("--language", default=None, help="language code for external systems (default: from the normalizer)")
    p.add_argument("--fast-path-threshold", type=float, default=None, help="override model.fast_path_threshold")
    p.add_argument("--models-dir", default=None)
    p.add_argument("--json", default=None, help="also write the figures (and hypotheses) to this file")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])

    if args.one:  # a child: one method, results to --out
        with open(args.out, "w") as f:
            json.dump(run_one(args), f)
        return 0

    from xasr.scoring.wer import score
    from xasr.data.dataset import batch_texts

    if args.methods and not args.model_dir:
        p.error("--model-dir is needed for the xasr methods")
    cuts = _load_cuts(args.cuts, args.limit)
    refs = dict(zip([c.id for c in cuts], batch_texts(cuts)))
    normalizer = _normalizer(cuts, args.normalizer)
    args.language = args.language or NORMALIZER_LANGUAGE.get(normalizer, "en")
    runs = [(m, m) for m in args.methods] + [(s, "system:" + s) for s in args.system]
    results: Dict[str, dict] = {}
    failed: Dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="xasr-decode-speed-") as tmp:
        for name, one in runs:
            out = os.path.join(tmp, f"{len(results) + len(failed)}.json")
            proc = subprocess.run(_child_command(args, one, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-4000:])
                lines = proc.stderr.strip().splitlines()
                failed[name] = lines[-1] if lines else f"exit {proc.returncode}"
                continue
            with open(out) as f:
                results[name] = json.load(f)
            sys.stderr.write(f"{name}: done in {results[name]['wall']:.1f} s\n")

    n = len(cuts)
    audio = sum(c.duration for c in cuts)
    print(f"# {n} utterances, {audio:.1f} s of audio, {args.cuts}; model {args.model_dir}")
    print(f"# {platform.processor() or platform.machine()}, torch threads {args.threads}, device {args.device}, "
          f"batches of at most {args.max_duration:g} s, normalizer {normalizer}")
    head = ["method", "error", "calls", "passes/utt", "passes/token", "positions/token", "accepted", "close", "fast",
            "tokens/s", "RTF", "peak RSS MB", "wall s"]
    rows = []
    for name, r in results.items():
        res = score(refs, r["hyps"], normalizer)
        st = r["stats"] or {}
        tokens = st.get("output_tokens", 0)
        llm = bool(st.get("row_passes")) or bool(st.get("fast_path"))
        utts = max(1, st.get("utterances", 0))
        r["error_rate"] = res.error_rate
        rows.append([
            name, f"{res.unit} {100 * res.error_rate:.2f}",
            _fmt(st["forward_calls"] if llm else None, "d"),
            _fmt(st["row_passes"] / utts if llm else None, ".2f"),
            _fmt(st["row_passes"] / max(1, tokens) if llm else None, ".3f"),
            _fmt(st["fed_positions"] / max(1, tokens) if llm else None, ".2f"),
            _fmt(100 * st["accepted_tokens"] / max(1, st["draft_tokens"]) if st.get("draft_tokens") else None, ".1f"),
            str(st.get("close_calls", "-")) if st.get("draft_tokens") else "-",
            str(st.get("fast_path", "-")) if st.get("draft_tokens") else "-",
            _fmt(tokens / r["wall"] if llm and r["wall"] > 0 else None, ".1f"),
            f"{r['wall'] / max(audio, 1e-9):.3f}", f"{r['rss_mb']:.0f}", f"{r['wall']:.1f}",
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for row in [head, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))
    for name, why in failed.items():
        print(f"{name}: failed ({why})")
    for name, r in results.items():
        vocab = name.partition("+")[2]
        ref = "llm_greedy" + (f"+{vocab}" if vocab else "")
        if name.startswith(("llm_speculative", "llm_fast")) and ref in results:
            greedy = results[ref]["hyps"]
            same = sum(r["hyps"].get(k) == v for k, v in greedy.items())
            print(f"{name} == {ref} on {same}/{len(greedy)} utterances")
    print("# columns: calls = batched LLM forward calls (one runs every unfinished row of its batch); "
          "passes = LLM forward passes counted per row; positions = positions run after the prompts, "
          "padding included (what a pass costs on a CPU); accepted = % of draft tokens (end-of-turn included) that "
          "became output; close = near-ties re-checked alone; fast = utterances the fast path took; tokens = LLM "
          "output tokens")
    print(f"# command: {command}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": command, "normalizer": normalizer, "results": results, "failed": failed}, f,
                      indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
