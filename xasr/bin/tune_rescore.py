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
from typing import Dict

from xasr.decoding.rescore import DEFAULT_BONUSES, DEFAULT_WEIGHTS
from xasr.errors import XasrError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", required=True)
    p.add_argument("--cuts", nargs="+", required=True, help="NAME=PATH of cut manifests with features (dev sets)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--normalizer", default="english_word", help="chinese_char, english_word or none")
    p.add_argument("--ctc-weights", nargs="+", type=float, default=list(DEFAULT_WEIGHTS))
    p.add_argument("--length-bonuses", nargs="+", type=float, default=list(DEFAULT_BONUSES))
    p.add_argument("--nbest", type=int, default=None, help="N-best size (default: the model's model.ctc_beam_size)")
    p.add_argument("--models-dir", default=None, help="where the frozen pretrained models are installed")
    p.add_argument("--max-duration", type=float, default=60.0, help="seconds of audio per batch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    import torch
    from lhotse import CutSet

    from xasr.utils.named import parse_named
    from xasr.data.dataset import batch_texts
    from xasr.decoding.dataset_decode import decode_cuts
    from xasr.decoding.methods import options_for
    from xasr.decoding.rescore import tune
    from xasr.model_dir import load_model_dir

    if any(not 0.0 <= w <= 1.0 for w in args.ctc_weights):
        raise XasrError(f"--ctc-weights must lie in [0, 1], got {args.ctc_weights}")
    if args.nbest is not None and args.nbest < 1:
        raise XasrError(f"--nbest must be at least 1, not {args.nbest}")
    from xasr.bin.options import check_files, check_normalizer, check_positive
    from xasr.model_dir import check_model_dir

    sets = parse_named(args.cuts, "--cuts")
    check_files(sets, "--cuts")
    check_model_dir(args.model_dir, "--model-dir")
    check_normalizer(args.normalizer)
    check_positive(args.max_duration, "--max-duration")
    check_positive(args.threads, "--threads", allow_zero=True)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model, cfg, units = load_model_dir(args.model_dir, models_dir=args.models_dir, device=args.device)
    opts = options_for(model, ctc_beam_size=args.nbest)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for set_name, path in sets.items():
        cuts = CutSet.from_file(path).to_eager()
        refs = dict(zip([c.id for c in cuts], batch_texts(cuts)))
        nbest: Dict[str, list] = {}
        decode_cuts(model, units, cuts, "llm_rescore", cfg.data.features, args.max_duration, args.device, nbest=nbest,
                    opts=opts)
        with open(out / f"nbest-{set_name}.jsonl", "w", encoding="utf-8") as f:
            for cid, hyps in nbest.items():
                f.write(json.dumps({"id": cid, "ref": refs[cid], "hyps": [
                    {"text": t, "units": len(u), "ctc": c, "llm": l} for t, u, c, l in hyps]}, ensure_ascii=False) + "\n")
        result = tune(nbest, refs, args.normalizer, args.ctc_weights, args.length_bonuses)
        result.write(out, set_name, f"{set_name}: llm_rescore, {opts.ctc_beam_size}-best")
        u = result.unit
        print(f"{set_name}: {len(refs)} utterances, {opts.ctc_beam_size}-best; CTC search alone %{u} "
              f"{result.ctc_alone:.2f}; N-best oracle %{u} {result.oracle:.2f}")
        for (w, b), v in sorted(result.table.items()):
            print(f"  w {w:g}\tbonus {b:g}\t%{u} {v:.2f}")
        w, b = result.best
        print(f"{set_name}: best %{u} {result.table[(w, b)]:.2f} at model.rescore_ctc_weight={w:g} "
              f"model.rescore_length_bonus={b:g} (tables and plot in {out})")
    return 0
