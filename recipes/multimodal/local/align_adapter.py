#!/usr/bin/env python3
"""Start the S-Adapter where the LLM already reads words: fit it to the LLM's own word embeddings.

Usage (from recipes/multimodal):
  python local/align_adapter.py --stage1 exp/stage1/model --out exp/stage2_init \
      experiment=scenes_stage2 models_dir=../../models data.units=data/lang_bpe_256/unit.model \
      data.encoder_cache=data/encoder_cache

Stage 2 on two CPU cores gets a few hundred updates through the frozen LLM, too few for a
randomly initialised S-Adapter to learn what the LLM should read. Its job is simple, though:
the stage-1 C-Former fires one vector per unit (here whole words), and the LLM knows the
embedding of every word. So before stage 2, without the LLM's forward pass:

  1. the stage-1 C-Former (frozen) runs over the stored encoder outputs of the training cuts
     with the target lengths, giving one vector per unit of the transcript;
  2. each unit's target is the mean input embedding of the LLM tokens that spell it as the
     LLM's transcript does (lower case, with the word's leading space);
  3. the S-Adapter is fitted to those targets (mean squared error, AdamW, a few seconds).

In: the stage-2 experiment (hydra overrides, for the model sections and the cached training
cuts) and the stage-1 model directory. Out: ``<out>/model.safetensors`` (the stage-1 weights
plus the fitted adapter) and ``frozen_parts.json``, a directory that ``train.init_from``
accepts; the fit's figures go to the log and to ``<out>/align.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import torch

logger = logging.getLogger("align_adapter")


def unit_targets(units, llm) -> torch.Tensor:
    """(V, D) mean LLM input embedding of the tokens spelling each unit (zeros for special units)."""
    emb = llm.model.get_input_embeddings().weight.detach()
    out = torch.zeros(units.get_piece_size(), emb.shape[1])
    for i in range(units.get_piece_size()):
        if units.is_control(i) or units.is_unknown(i) or units.is_unused(i):
            continue
        piece = units.id_to_piece(i)
        if piece.startswith("<") and piece.endswith(">"):
            continue
        text = piece.replace("\u2581", " ")
        if llm.cfg.target_case == "lower":
            text = text.lower()
        ids = llm.tokenizer.encode(text, add_special_tokens=False)
        if ids:
            out[i] = emb[ids].float().mean(0)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="hydra overrides of the stage-2 experiment")
    p.add_argument("--stage1", required=True, help="stage-1 model directory")
    p.add_argument("--out", required=True, help="directory for train.init_from")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch", type=int, default=256, help="vectors per update")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()

    import sentencepiece as spm
    from lhotse import CutSet
    from omegaconf import OmegaConf
    from safetensors.torch import load_file, save_file

    from xasr.config import load_experiment
    from xasr.data.dataset import AsrDataset, DataConfig, make_loader
    from xasr.data.encoder_cache import cached_manifest
    from xasr.models.model import FROZEN, WEIGHTS, XLLMSpeechModel
    from xasr.utils.logging import setup_logging

    setup_logging(None)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.time()
    cfg = load_experiment(args.overrides)
    if not cfg.data.encoder_cache:
        raise SystemExit("give data.encoder_cache=<dir>: the C-Former runs on the stored encoder outputs")
    units = spm.SentencePieceProcessor(model_file=cfg.data.units)
    cfg.model.vocab_size = units.get_piece_size()
    model = XLLMSpeechModel(OmegaConf.to_object(cfg.model), models_dir=cfg.models_dir)
    stage1 = load_file(str(Path(args.stage1) / WEIGHTS))
    missing = [k for k in ("cformer", "ctc") if not any(n.startswith(k + ".") for n in stage1)]
    if missing:
        raise SystemExit(f"{args.stage1}: no {', '.join(missing)} weights (not a stage-1 model)")
    model.load_state_dict(stage1, strict=False)
    model.eval()
    targets = unit_targets(units, model.llm)  # (V, D)

    # 1. one C-Former vector per unit of every training transcript
    paths = [cached_manifest(cfg.data.encoder_cache, m) for m in cfg.data.train_cuts]
    cuts = CutSet.from_files(paths) if len(paths) > 1 else CutSet.from_file(paths[0])
    dataset = AsrDataset(cfg.data.units, cfg.data.features, encoded=True)
    loader, _ = make_loader(cuts, dataset, DataConfig(max_duration=120.0, shuffle=False), train=False)
    xs, ys = [], []
    with torch.no_grad():
        for batch in loader:
            cf = model.cformer(batch["feats"], batch["feat_lens"], target_lens=batch["token_lens"],
                               alphas=model.cif_alphas(batch["feats"], batch["feat_lens"]))
            for b in range(cf.vectors.shape[0]):
                n = int(batch["token_lens"][b])
                xs.append(cf.vectors[b, :n])  # (n, dim)
                ys.append(batch["tokens"][b, :n])
    x, y = torch.cat(xs), torch.cat(ys)  # (N, dim), (N,)
    logger.info("%d C-Former vectors from %d cuts in %.0f s", x.shape[0], len(xs), time.time() - t0)

    # 2.-3. fit the adapter to the target embeddings
    adapter = model.adapter
    adapter.train()
    opt = torch.optim.AdamW(adapter.parameters(), lr=args.lr, weight_decay=0.01)
    steps = args.epochs * ((x.shape[0] + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.1)
    tgt = targets[y]  # (N, D)
    var = float(((tgt - tgt.mean(0)) ** 2).sum(1).mean())
    step = 0
    for epoch in range(args.epochs):
        order = torch.randperm(x.shape[0])
        for i in range(0, x.shape[0], args.batch):
            idx = order[i:i + args.batch]
            loss = ((adapter(x[idx]) - tgt[idx]) ** 2).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
    adapter.eval()
    with torch.no_grad():
        out = adapter(x)  # (N, D)
        mse = float(((out - tgt) ** 2).sum(1).mean())
        # nearest unit target of each fitted vector: how often is it the right unit?
        known = targets.abs().sum(1) > 0
        dist = torch.cdist(out, targets[known])
        nearest = known.nonzero(as_tuple=True)[0][dist.argmin(1)]
        acc = float((nearest == y).float().mean())
    logger.info("adapter fit: %d steps, squared error %.3f (target variance %.3f), nearest-word accuracy %.3f",
                step, mse, var, acc)

    # the stage-1 weights plus the fitted adapter, for train.init_from
    d = Path(args.out)
    d.mkdir(parents=True, exist_ok=True)
    state = dict(stage1)
    state.update({f"adapter.{k}": v.detach().contiguous() for k, v in adapter.state_dict().items()})
    save_file(state, str(d / WEIGHTS))
    if (Path(args.stage1) / FROZEN).is_file():
        shutil.copy(Path(args.stage1) / FROZEN, d / FROZEN)
    (d / "align.json").write_text(json.dumps({"vectors": int(x.shape[0]), "steps": step, "squared_error": mse,
                                              "target_variance": var, "nearest_word_accuracy": acc,
                                              "seconds": round(time.time() - t0, 1)}, indent=1))
    logger.info("wrote %s in %.0f s", d, time.time() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
