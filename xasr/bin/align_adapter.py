"""Fit a stage-2 experiment's S-Adapter to the frozen LLM's token embeddings (before stage 2).

Usage:
  xasr align-adapter experiment=aishell_stage2 models_dir=models data.units=data/lang_char/unit.model \
      data.encoder_cache=data/encoder_cache --init exp/stage1/model --out exp/stage2_init
  xasr train experiment=aishell_stage2 train.init_from=exp/stage2_init ...

The stage-1 model fires one C-Former vector per unit of each training transcript; the adapter
is fitted (mean squared error) to the LLM input embedding of the tokens that spell the unit.
Stage 2 then starts from an adapter that the LLM already reads, instead of from noise. The
output is a model directory (it decodes); ``align.json`` in it holds the fit's figures.
"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", help="hydra overrides of the stage-2 experiment")
    p.add_argument("--init", required=True, help="the stage-1 model directory")
    p.add_argument("--out", required=True, help="model directory to write (for train.init_from)")
    p.add_argument("--config-dir", default=None, help="a conf/ directory (default: the package's conf/)")
    p.add_argument("--steps", type=int, default=2000, help="updates of the fit")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=256, help="vectors per update")
    p.add_argument("--max-duration", type=float, default=120.0, help="seconds of audio per batch when collecting")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--max-cuts", type=int, default=2500,
                   help="fit on at most this many training cuts (a seeded random subset; all when fewer): "
                        "their vectors are held in memory, and collecting them is most of the time (2,500 of "
                        "Aishell's 5,751 gave the same validation nearest-unit accuracy in 85 s instead of 145 s)")


def run(args: argparse.Namespace) -> int:
    import json
    import logging
    import random
    import time
    from pathlib import Path

    import sentencepiece as spm
    import torch
    from lhotse import CutSet
    from omegaconf import OmegaConf

    from xasr.config import load_experiment
    from xasr.data.dataset import AsrDataset, DataConfig, make_loader
    from xasr.data.encoder_cache import experiment_manifests
    from xasr.errors import XasrError
    from xasr.models.adapter_init import fit_adapter, nearest_unit_accuracy, unit_targets, unit_vectors
    from xasr.models.model import XLLMSpeechModel
    from xasr.model_dir import init_from_dir, save_model_dir

    log = logging.getLogger("xasr.align_adapter")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.time()
    cfg = load_experiment(args.overrides, config_dir=args.config_dir)
    if not cfg.model.use_llm:
        raise XasrError("align-adapter needs a stage-2 experiment (model.use_llm=true)")
    units = spm.SentencePieceProcessor(model_file=cfg.data.units)
    cfg.model.vocab_size = units.get_piece_size()
    model = XLLMSpeechModel(OmegaConf.to_object(cfg.model), models_dir=cfg.models_dir)
    loaded, _ = init_from_dir(model, args.init)
    for part in ("cformer", "ctc"):
        if not any(k.startswith(part + ".") for k in loaded):
            raise XasrError(f"{args.init}: no {part} weights that fit this model (not its stage-1 model?)")

    train_paths, valid_paths = experiment_manifests(cfg)
    dataset = AsrDataset(cfg.data.units, cfg.data.features, encoded=bool(cfg.data.encoder_cache))
    collect = DataConfig(max_duration=args.max_duration, shuffle=False)

    targets = unit_targets(units, model.llm)
    table = None
    if model.adapter.unit_table is not None:  # posterior_mix: the table starts as the LLM's unit embeddings
        with torch.no_grad():
            model.adapter.unit_table.copy_(targets)
        table = targets

    def vectors(paths, limit=0):
        cuts = CutSet.from_files(paths) if len(paths) > 1 else CutSet.from_file(paths[0])
        if limit > 0:
            cuts = cuts.to_eager()
            if len(cuts) > limit:
                log.info("fitting on %d of the %d training cuts (--max-cuts)", limit, len(cuts))
                cuts = cuts.shuffle(rng=random.Random(0)).subset(first=limit)
        loader, _ = make_loader(cuts, dataset, collect, train=False)
        return unit_vectors(model, loader, table)

    if args.max_cuts < 1:
        raise XasrError(f"--max-cuts must be at least 1, not {args.max_cuts}")
    x, y, base = vectors(train_paths, args.max_cuts)
    valid = vectors(valid_paths) if valid_paths else None
    log.info("%d training and %d validation C-Former vectors in %.0f s", x.shape[0],
             0 if valid is None else valid[0].shape[0], time.time() - t0)
    if base is not None:
        with torch.no_grad():
            head_only = nearest_unit_accuracy(base, y, targets)
            valid_head = nearest_unit_accuracy(valid[2], valid[1], targets) if valid else float("nan")
        log.info("the posterior-weighted unit table alone: nearest-unit accuracy %.3f (training) %.3f "
                 "(validation)", head_only, valid_head)
    stats = fit_adapter(model.adapter, x, y, targets, valid=valid, steps=args.steps, lr=args.lr,
                        batch_size=args.batch_size, base=base)
    log.info("adapter fit: %d steps in %.0f s, squared error %.3f (a constant output: %.3f), nearest-unit "
             "accuracy %.3f (training) %.3f (validation)", stats.steps, stats.seconds, stats.squared_error,
             stats.target_variance, stats.train_nearest_unit_accuracy, stats.valid_nearest_unit_accuracy)
    out = save_model_dir(model, cfg, cfg.data.units, args.out)
    (Path(out) / "align.json").write_text(json.dumps(stats.to_dict(), indent=1) + "\n")
    log.info("wrote %s in %.0f s", out, time.time() - t0)
    return 0
