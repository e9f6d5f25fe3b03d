"""Tune llm_rescore's CTC weight and length bonus on a dev set: the N-best is decoded and scored once.

Usage:
  xasr tune-rescore --model-dir exp/stage2/model --cuts dev=data/fbank/aishell_cuts_dev.jsonl.gz \\
      --normalizer chinese_char --out-dir exp/tune_rescore --ctc-weights 0.3 0.5 0.7 1.0 --length-bonuses 0 1 2

Per set it writes ``tune-{set}.tsv`` (the error rate at every grid point), ``tune-{set}.png``
(error rate against the CTC weight, a line per length bonus) and ``nbest-{set}.jsonl`` (each
utterance's N-best with its CTC and LLM log-probabilities), and prints the best point with the
two overrides that set it (``model.rescore_ctc_weight``, ``model.rescore_length_bonus``). The
table also gives the N-best's oracle error rate (the best hypothesis of each list chosen with the
reference: what no weighting can beat) and the CTC search alone (weight 1, bonus 0).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from xasr.errors import XasrError

Scored = List[Tuple[str, Sequence[int], float, float]]  # (text, units, CTC, LLM) per hypothesis


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", required=True)
    p.add_argument("--cuts", nargs="+", required=True, help="NAME=PATH of cut manifests with features (dev sets)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--normalizer", default="english_word", help="chinese_char, english_word or none")
    p.add_argument("--ctc-weights", nargs="+", type=float, default=[0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    p.add_argument("--length-bonuses", nargs="+", type=float, default=[-1.0, 0.0, 1.0, 2.0, 3.0])
    p.add_argument("--nbest", type=int, default=None, help="N-best size (default: the model's model.ctc_beam_size)")
    p.add_argument("--models-dir", default=None, help="where the frozen pretrained models are installed")
    p.add_argument("--max-duration", type=float, default=60.0, help="seconds of audio per batch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)


def choose(nbest: Dict[str, Scored], ctc_weight: float, length_bonus: float) -> Dict[str, str]:
    """{cut id: the text llm_rescore picks at these settings}."""
    from xasr.decoding.rescore import rescore

    out = {}
    for cid, hyps in nbest.items():
        if not hyps:
            out[cid] = ""
            continue
        best = rescore([h[2] for h in hyps], [h[3] for h in hyps], [len(h[1]) for h in hyps], ctc_weight, length_bonus)
        out[cid] = hyps[best][0]
    return out


def oracle(nbest: Dict[str, Scored], refs: Dict[str, str], normalizer: str) -> Dict[str, str]:
    """{cut id: the hypothesis of its N-best with the fewest errors against the reference}."""
    from xasr.scoring.wer import score

    out = {}
    for cid, hyps in nbest.items():
        texts = [h[0] for h in hyps] or [""]
        errors = [score({cid: refs[cid]}, {cid: t}, normalizer).num_errors for t in texts]
        out[cid] = texts[errors.index(min(errors))]
    return out


def grid(nbest: Dict[str, Scored], refs: Dict[str, str], normalizer: str, weights: Sequence[float],
         bonuses: Sequence[float]) -> Dict[Tuple[float, float], float]:
    """{(ctc weight, length bonus): error rate in %}."""
    from xasr.scoring.wer import score

    return {(w, b): 100 * score(refs, choose(nbest, w, b), normalizer).error_rate for w in weights for b in bonuses}


def plot_grid(table: Dict[Tuple[float, float], float], unit: str, floor: Dict[str, float], path: Path,
              title: str) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    weights = sorted({w for w, _ in table})
    for b in sorted({b for _, b in table}):
        ax.plot(weights, [table[(w, b)] for w in weights], marker="o", label=f"bonus {b:g}")
    for (name, value), style in zip(floor.items(), ("--", ":")):
        ax.axhline(value, color="0.4", linestyle=style, label=f"{name} {value:.2f}")
    ax.set_xlabel("CTC weight w (LLM weight 1 - w)")
    ax.set_ylabel(f"%{unit}")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def run(args: argparse.Namespace) -> int:
    import torch
    from lhotse import CutSet

    from xasr.benchmark.testsets import parse_named
    from xasr.data.dataset import batch_texts
    from xasr.decoding.dataset_decode import decode_cuts
    from xasr.models.model import load_model_dir
    from xasr.scoring.wer import score

    if any(not 0.0 <= w <= 1.0 for w in args.ctc_weights):
        raise XasrError(f"--ctc-weights must lie in [0, 1], got {args.ctc_weights}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    sets = parse_named(args.cuts, "--cuts")
    model, cfg, _units = load_model_dir(args.model_dir, models_dir=args.models_dir, device=args.device)
    if args.nbest is not None:
        if args.nbest < 1:
            raise XasrError(f"--nbest must be at least 1, not {args.nbest}")
        model.cfg.ctc_beam_size = args.nbest
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for set_name, path in sets.items():
        cuts = CutSet.from_file(path).to_eager()
        refs = dict(zip([c.id for c in cuts], batch_texts(cuts)))
        nbest: Dict[str, Scored] = {}
        decode_cuts(model, _units, cuts, "llm_rescore", cfg.data.features, args.max_duration, args.device, nbest=nbest)
        with open(out / f"nbest-{set_name}.jsonl", "w", encoding="utf-8") as f:
            for cid, hyps in nbest.items():
                f.write(json.dumps({"id": cid, "ref": refs[cid], "hyps": [
                    {"text": t, "units": len(u), "ctc": c, "llm": l} for t, u, c, l in hyps]}, ensure_ascii=False) + "\n")
        table = grid(nbest, refs, args.normalizer, args.ctc_weights, args.length_bonuses)
        unit = score(refs, choose(nbest, 1.0, 0.0), args.normalizer).unit
        floor = {"CTC search alone": 100 * score(refs, choose(nbest, 1.0, 0.0), args.normalizer).error_rate,
                 "N-best oracle": 100 * score(refs, oracle(nbest, refs, args.normalizer), args.normalizer).error_rate}
        (w, b), best = min(table.items(), key=lambda kv: (kv[1], -kv[0][0]))
        with open(out / f"tune-{set_name}.tsv", "w") as f:
            f.write(f"ctc_weight\tlength_bonus\t%{unit}\n")
            for (tw, tb), v in sorted(table.items()):
                f.write(f"{tw:g}\t{tb:g}\t{v:.2f}\n")
        plot_grid(table, unit, floor, out / f"tune-{set_name}.png",
                  f"{set_name}: llm_rescore, {model.cfg.ctc_beam_size}-best")
        print(f"{set_name}: {len(refs)} utterances, {model.cfg.ctc_beam_size}-best; "
              + "; ".join(f"{k} %{unit} {v:.2f}" for k, v in floor.items()))
        for (tw, tb), v in sorted(table.items()):
            print(f"  w {tw:g}\tbonus {tb:g}\t%{unit} {v:.2f}")
        print(f"{set_name}: best %{unit} {best:.2f} at model.rescore_ctc_weight={w:g} "
              f"model.rescore_length_bonus={b:g} (tables and plot in {out})")
    return 0
