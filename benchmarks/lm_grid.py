"""The n-gram LM's settings in the CTC prefix search (``ctc_beam``), on a grid, for one set.

The model's CTC log-probabilities are computed once; every grid point then runs the fused search
(:class:`xasr.decoding.rescore.LmFusion`) over the whole set and is scored. Prints a Markdown
table (error rate, its 95% bootstrap interval, seconds of search) with the command, and writes
``lm-grid-{set}.tsv`` and ``lm-grid-{set}.png`` (error rate against the LM weight, a line per
OOV penalty and token bonus) to ``--out-dir``. A grid point is WEIGHT:BONUS:OOV_PENALTY; 0:0:0 is
the search without the LM. A fourth field, WEIGHT:BONUS:OOV_PENALTY:SCALE, searches with
homophone classes (:mod:`xasr.decoding.homophones`: characters espeak-ng's Mandarin voice reads
alike) and the CTC head's split of a class among its members raised to SCALE (0: the LM alone
chooses among homophones; 1: the head's split kept).

Usage:
  cd recipes/librispeech
  python ../../benchmarks/lm_grid.py --model-dir exp/stage2/model --lm data/lm/word3.arpa \
      --cuts dev-clean=data/fbank/librispeech_cuts_dev-clean.jsonl.gz --normalizer english_word \
      --points 0:0:0 0.5:1:-10 0.5:2:-20 --out-dir exp/lm_grid
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple


def parse_point(text: str) -> Tuple[float, float, float, Optional[float]]:
    try:
        fields = [float(x) for x in text.split(":")]
        if len(fields) not in (3, 4):
            raise ValueError
    except ValueError:
        raise SystemExit(f"--points: {text!r} is not WEIGHT:BONUS:OOV_PENALTY[:HOMOPHONE_SCALE]")
    return fields[0], fields[1], fields[2], (fields[3] if len(fields) == 4 else None)


def point_label(point) -> str:
    """W:B:OOV[:SCALE] as the grid names it; a missing homophone scale shows as -."""
    return ":".join("-" if x is None else f"{x:g}" for x in point)


def ctc_log_probs(model, cfg, cuts, max_duration: float) -> Dict[str, "object"]:
    import torch

    from xasr.data.dataset import AsrDataset, DataConfig, make_loader

    loader, _ = make_loader(cuts, AsrDataset(None, cfg.data.features), DataConfig(max_duration=max_duration,
                                                                                 shuffle=False), train=False)
    out = {}
    with torch.no_grad():
        for batch in loader:
            h, h_lens = model.encode_batch(batch)
            lp = model.ctc(h).float().numpy()
            for i, cid in enumerate(batch.ids):
                out[cid] = lp[i, :max(1, int(h_lens[i]))]
    return out


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--lm", default=None, help="ARPA file (default: the model directory's own)")
    p.add_argument("--tokens", choices=("word", "char"), default=None, help="default: the model's model.ngram.tokens")
    p.add_argument("--cuts", required=True, help="NAME=PATH of a cut manifest with features")
    p.add_argument("--normalizer", default="english_word")
    p.add_argument("--points", nargs="+", required=True, help="WEIGHT:BONUS:OOV_PENALTY grid points")
    p.add_argument("--beam", type=int, default=None, help="default: the model's model.ctc_beam_size")
    p.add_argument("--models-dir", default=None)
    p.add_argument("--max-duration", type=float, default=60.0)
    p.add_argument("--out-dir", required=True)
    args = p.parse_args(argv)

    import torch
    from lhotse import CutSet

    from xasr.data.dataset import batch_texts
    from xasr.decoding.homophones import homophone_classes
    from xasr.decoding.joint_ctc import CtcPrefixScorer
    from xasr.decoding.ngram import NgramLM
    from xasr.decoding.rescore import LmFusion, ctc_prefix_search
    from xasr.model_dir import load_model_dir
    from xasr.scoring.wer import score

    torch.set_num_threads(1)
    points = [parse_point(t) for t in args.points]
    name, _, path = args.cuts.partition("=")
    model, cfg, units = load_model_dir(args.model_dir, models_dir=args.models_dir)
    lm_path = args.lm or model.cfg.ngram.path
    if not lm_path:
        raise SystemExit(f"{args.model_dir} has no n-gram LM: give one with --lm")
    lm = NgramLM.read_arpa(lm_path)
    tokens = args.tokens or model.cfg.ngram.tokens
    beam = args.beam or model.cfg.ctc_beam_size
    pieces = [units.id_to_piece(i) for i in range(units.get_piece_size())]
    cuts = CutSet.from_file(path).to_eager()
    refs = dict(zip([c.id for c in cuts], batch_texts(cuts)))
    log_probs = ctc_log_probs(model, cfg, cuts, args.max_duration)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(f"command: python benchmarks/lm_grid.py {' '.join(argv)}")
    print(f"{name}: {len(refs)} utterances, {tokens} LM {lm_path} (order {lm.order}), beam {beam}\n")
    classes = None
    if any(pt[3] is not None for pt in points):
        classes = homophone_classes(pieces)
        print(f"homophone classes: {len(pieces)} units in {len(set(classes.tolist()))} classes")
    print("| LM weight | token bonus | OOV penalty | homophone scale | error % [95% CI] | search s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = []
    hyps_at = {}
    for w, b, oov, hscale in points:
        t0 = time.time()
        hyps = {}
        for cid, lp in log_probs.items():
            fusion = LmFusion(lm, pieces, tokens, w, b, oov) if (w, b) != (0.0, 0.0) else None
            if hscale is None:
                scorer = CtcPrefixScorer(lp, model.ctc.blank_id)
            else:
                scorer = CtcPrefixScorer.of_classes(lp, model.ctc.blank_id, classes, hscale)
            nbest = ctc_prefix_search(scorer, beam=beam, nbest=beam, lm=fusion)
            hyps[cid] = units.decode(list(nbest[0][0])) if nbest else ""
        secs = time.time() - t0
        r = score(refs, hyps, args.normalizer)
        hyps_at[(w, b, oov, hscale)] = r
        lo, hi = r.interval()
        rows.append((w, b, oov, -1.0 if hscale is None else hscale, 100 * r.error_rate, 100 * lo, 100 * hi, secs))
        print(f"| {w:g} | {b:g} | {oov:g} | {point_label((hscale,))} | "
              f"{100 * r.error_rate:.2f} [{100 * lo:.1f}, {100 * hi:.1f}] | {secs:.1f} |", flush=True)
    with open(out / f"lm-grid-{name}.tsv", "w") as f:
        f.write("lm_weight\ttoken_bonus\toov_penalty\thomophone_scale\terror\tci_low\tci_high\tsearch_seconds\n")
        for row in rows:
            f.write("\t".join(f"{x:g}" if i < 4 else f"{x:.2f}" for i, x in enumerate(row)) + "\n")
    if len(hyps_at) > 1:
        from xasr.scoring.stats import paired_bootstrap_test

        first, *rest = list(hyps_at)
        a = hyps_at[first]
        print("\np (one-sided paired bootstrap) that a point is not better than the first, "
              f"{point_label(first)}:")
        for key in rest:
            b = hyps_at[key]
            p = paired_bootstrap_test(a.per_utt_errors(), b.per_utt_errors(), a.per_utt_ref_lens())
            print(f"  {point_label(key)}: {p:.3f}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    lines: Dict[Tuple[float, float], List[Tuple[float, float]]] = {}
    for w, b, oov, hs, err, *_ in rows:
        if (w, b) == (0.0, 0.0):
            ax.axhline(err, color="gray", linestyle="--", label=f"no LM ({err:.1f})")
        else:
            lines.setdefault((b, oov, hs), []).append((w, err))
    for (b, oov, hs), pts in sorted(lines.items()):
        pts.sort()
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o",
                label=f"bonus {b:g}, OOV {oov:g}" + (f", homophone scale {hs:g}" if hs >= 0 else ""))
    ax.set_xlabel("LM weight")
    ax.set_ylabel(f"{r.unit} (%)")
    ax.set_title(f"{name}: n-gram LM in the CTC prefix search (beam {beam})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"lm-grid-{name}.png", dpi=120)
    print(f"\n{out / f'lm-grid-{name}.tsv'}, {out / f'lm-grid-{name}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
