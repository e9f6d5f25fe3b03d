"""Store the outputs of the experiment's frozen encoder for cut manifests (fast stage-1/2 training).

Usage:
  xasr cache-encoder experiment=aishell_stage1 models_dir=models --out-dir data/encoder_cache
  xasr cache-encoder experiment=aishell_stage1 --cuts data/fbank/aishell_cuts_test.jsonl.gz --out-dir data/encoder_cache
  xasr train experiment=aishell_stage1 data.encoder_cache=data/encoder_cache
"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", help="hydra overrides that select the experiment (its encoder and features)")
    p.add_argument("--cuts", nargs="+", default=None,
                   help="cut manifests to encode (default: the experiment's data.train_cuts and data.valid_cuts)")
    p.add_argument("--out-dir", required=True, help="where the cached manifests, arrays and cache.json go")
    p.add_argument("--config-dir", default=None, help="a conf/ directory (default: the package's conf/)")
    p.add_argument("--max-duration", type=float, default=60.0, help="seconds of audio per batch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    import torch

    from xasr.config import load_experiment
    from xasr.data.encoder_cache import cache_encoder_outputs

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = load_experiment(args.overrides, config_dir=args.config_dir)
    cuts = args.cuts or list(cfg.data.train_cuts) + list(cfg.data.valid_cuts)
    cache_encoder_outputs(cfg, cuts, args.out_dir, max_duration=args.max_duration, device=args.device)
    return 0
