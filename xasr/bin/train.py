"""Train a stage of the X-LLM speech model (hydra overrides select the experiment).

Usage:
  xasr train experiment=aishell_conformer_stage1 train.exp_dir=exp/stage1
  xasr train experiment=aishell_conformer_stage2 train.init_from=exp/stage1/model
  torchrun --nproc_per_node 2 -m xasr.bin.cli train experiment=librispeech_stage1 train.num_threads=1
  xasr train --config-dir my_conf experiment=mine        # your own conf/ tree
  xasr train --show experiment=aishell_conformer_stage1  # print the resolved config and exit
"""
from __future__ import annotations

import argparse

from omegaconf import OmegaConf


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", help="hydra overrides, e.g. experiment=NAME train.max_steps=100")
    p.add_argument("--config-dir", default=None, help="a conf/ directory (default: the package's conf/)")
    p.add_argument("--show", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    from xasr.config import load_experiment

    cfg = load_experiment(args.overrides, config_dir=args.config_dir)
    if args.show:
        print(OmegaConf.to_yaml(cfg))
        return 0
    from xasr.trainer import train

    train(cfg)
    return 0
