#!/usr/bin/env python3
"""Start the image path reading the picture: fit Q-Former + I-Adapter to words that describe it.

Usage (from recipes/multimodal):
  python local/align_image.py --init exp/stage2/model --out exp/stage3_init --extra-scenes 1000 \
      experiment=scenes_stage3 models_dir=../../models data.units=data/lang_bpe_256/unit.model

Trained only through the frozen LLM for the few hundred updates 2 CPU cores allow, the Q-Former
settles on a fixed prompt that ignores the picture (its output hardly varies between pictures).
X-LLM's image interface starts from image-caption training instead; this is that step for the
scenes corpus, in the LLM's embedding space and without the LLM's forward pass:

  1. pictures: every training scene, plus ``--extra-scenes`` new ones drawn and rendered the
     same way (:mod:`xasr.corpora.scenes`; none shares its objects and places with a dev or test
     scene), go through the frozen image encoder once;
  2. targets (``--layout cells``, the default with 36 queries): four query slots per cell of the picture's
     3 x 3 grid, row-major: the LLM input embeddings of the colour, shape, size and place words
     of the object in that cell (as the LLM's transcripts spell them), the zero vector for the
     first three slots of an empty cell. Each query thus reads one region of the picture.
     (``--layout objects``: the objects in reading order, four slots each, repeated to fill the
     queries; the Q-Former must then also sort the objects, and fits worse: dev colour / shape
     accuracy 0.37 / 0.60 against 0.63 / 0.94 for cells, 30 epochs, 600 new scenes);
  3. the Q-Former and I-Adapter are fitted to the targets (mean squared error, AdamW). The dev
     scenes measure how often the word nearest to each slot's vector is the right one.

In: the stage-3 experiment (hydra overrides) and the stage-2 model directory (``--init``).
Out: ``<out>/model``, a model directory (the stage-2 weights plus the fitted image path) for
``train.init_from``; the figures go to ``<out>/align.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch

logger = logging.getLogger("align_image")

SLOTS = ("colour", "shape", "size", "place")
ROWS = {"TOP": 0, "MIDDLE": 1, "BOTTOM": 2}
COLUMNS = {"LEFT": 0, "MIDDLE": 1, "RIGHT": 2}
PLACE_OF_CELL = [r if r == c else f"{r} {c}" for r in ROWS for c in COLUMNS]  # MIDDLE MIDDLE -> MIDDLE


def object_words(o) -> Tuple[str, str, str, str]:
    place = o.row if o.row == o.column else f"{o.row} {o.column}"  # MIDDLE MIDDLE -> MIDDLE
    return o.colour, o.shape, o.size, place


def scene_words(scene, num_queries: int, layout: str = "cells") -> List[Tuple[str, str]]:
    """(slot kind, words) of each query, four slots (colour, shape, size, place) per group.

    ``cells``: one group per cell of the 3 x 3 grid, row-major (num_queries must be 36); an empty
    cell's colour, shape and size slots have the empty word (the zero vector), its place slot the
    cell's place. ``objects``: the objects in reading order, repeated to fill the queries.
    """
    per = len(SLOTS)
    out = []
    if layout == "cells":
        if num_queries != 9 * per:
            raise ValueError(f"the cells layout needs {9 * per} queries (9 cells x {per} slots), got {num_queries}")
        at = {(ROWS[o.row], COLUMNS[o.column]): o for o in scene.objects}
        for q in range(num_queries):
            cell, slot = divmod(q, per)
            r, c = divmod(cell, 3)
            o = at.get((r, c))
            place = PLACE_OF_CELL[cell]
            word = place if SLOTS[slot] == "place" else (object_words(o)[slot] if o is not None else "")
            out.append((SLOTS[slot], word))
        return out
    objs = sorted(scene.objects, key=lambda o: (ROWS[o.row], o.centre[0]))
    for q in range(num_queries):
        o = objs[(q // per) % len(objs)]
        out.append((SLOTS[q % per], object_words(o)[q % per]))
    return out


def word_embedding(llm, words: str) -> torch.Tensor:
    if not words:  # an empty cell's slot
        return torch.zeros(llm.model.get_input_embeddings().embedding_dim)
    text = " " + (words.lower() if llm.cfg.target_case == "lower" else words)
    ids = llm.tokenizer.encode(text, add_special_tokens=False)
    with torch.no_grad():  # the embedding layer called, not its table read: some LLMs scale it
        return llm.model.get_input_embeddings()(torch.tensor(ids)).float().mean(0)


def scenes_of(manifests: Sequence[str]):
    """{picture path: Scene} of the cuts in the manifests."""
    from lhotse import CutSet

    from xasr.corpora.scenes_corpus import cut_scene

    out = {}
    for m in manifests:
        for c in CutSet.from_file(m):
            out.setdefault(str(c.custom["image"]), cut_scene(c))
    return out


def encode(model, opts, paths: Sequence[str], batch: int = 32) -> torch.Tensor:
    """(N, h*w, C) float16 image encoder features of the pictures."""
    from xasr.data.images import load_image

    feats = []
    with torch.no_grad():
        for i in range(0, len(paths), batch):
            x = torch.stack([load_image(p, opts.size, opts.mean, opts.std) for p in paths[i:i + batch]])
            f, _, _ = model.image_encoder(x)  # (B, h*w, C)
            feats.append(f.half())
    return torch.cat(feats)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="hydra overrides of the stage-3 experiment")
    p.add_argument("--init", required=True, help="stage-2 model directory (the speech path)")
    p.add_argument("--out", required=True, help="directory for train.init_from")
    p.add_argument("--extra-scenes", type=int, default=1000, help="new scenes drawn for this fit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=32, help="pictures per update")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--layout", choices=("auto", "cells", "objects"), default="auto",
                   help="query targets: per cell of the 3 x 3 grid, or per object in reading order "
                        "(auto: cells when the Q-Former has 36 queries, else objects)")
    args = p.parse_args()

    import sentencepiece as spm
    from omegaconf import OmegaConf

    from xasr.config import load_experiment
    from xasr.models.image_encoder import image_loading
    from xasr.corpora.scenes import render_scene, sample_scene
    from xasr.models.model import XLLMSpeechModel
    from xasr.model_dir import init_from_dir, save_model_dir
    from xasr.utils.logging import setup_logging

    setup_logging(None)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    cfg = load_experiment(args.overrides)
    units = spm.SentencePieceProcessor(model_file=cfg.data.units)
    cfg.model.vocab_size = units.get_piece_size()
    model = XLLMSpeechModel(OmegaConf.to_object(cfg.model), models_dir=cfg.models_dir)
    init_from_dir(model, args.init)  # checks that the frozen parts are the same
    model.eval()
    opts = image_loading(cfg.data, cfg.model.image.encoder)
    nq = cfg.model.image.qformer.num_queries
    if args.layout == "auto":
        args.layout = "cells" if nq == 9 * len(SLOTS) else "objects"
    logger.info("query targets: %s layout, %d queries", args.layout, nq)

    # 1. pictures: the training scenes and new ones; the dev scenes for the check
    manifest_dir = Path(cfg.data.train_cuts[0]).parent
    train = scenes_of(cfg.data.train_cuts)
    dev = scenes_of(cfg.data.valid_cuts)
    held_out = {s.signature() for s in dev.values()}
    for m in sorted(manifest_dir.glob("*_cuts_test*.jsonl.gz")):
        held_out |= {s.signature() for s in scenes_of([str(m)]).values()}
    out_dir = Path(args.out)
    png_dir = out_dir / "extra_scenes"
    png_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"align-image-{args.seed}")
    seen = held_out | {s.signature() for s in train.values()}
    extra = {}
    while len(extra) < args.extra_scenes:
        s = sample_scene(f"extra{len(extra):05d}", rng, opts.size)
        if s.signature() in seen:
            continue
        seen.add(s.signature())
        path = png_dir / f"{s.id}.png"
        render_scene(s).save(path, format="PNG")
        extra[str(path)] = s
    fit_scenes = {**train, **extra}
    fit_paths, dev_paths = sorted(fit_scenes), sorted(dev)
    fit_x = encode(model, opts, fit_paths)
    dev_x = encode(model, opts, dev_paths)
    grid = model.image_encoder.grid
    logger.info("%d pictures to fit (%d training scenes, %d new), %d dev pictures, encoded in %.0f s",
                len(fit_paths), len(train), len(extra), len(dev_paths), time.time() - t0)

    # 2. targets
    vocab: Dict[str, torch.Tensor] = {}

    def targets(scenes, paths):
        rows, kinds = [], []
        for pth in paths:
            slots = scene_words(scenes[pth], nq, args.layout)
            for _, w in slots:
                if w not in vocab:
                    vocab[w] = word_embedding(model.llm, w)
            rows.append(torch.stack([vocab[w] for _, w in slots]))
            kinds.append(slots)
        return torch.stack(rows), kinds  # (N, Q, D)

    fit_y, _ = targets(fit_scenes, fit_paths)
    dev_y, dev_slots = targets(dev, dev_paths)
    words = sorted(vocab)
    table = torch.stack([vocab[w] for w in words])  # (W, D)

    # 3. fit the Q-Former and the I-Adapter
    qformer, adapter = model.qformer, model.image_adapter
    params = list(qformer.parameters()) + list(adapter.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    per_epoch = (len(fit_paths) + args.batch - 1) // args.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * per_epoch,
                                                pct_start=0.1)
    n_feat = fit_x.shape[1]

    def run(x):  # (B, h*w, C) -> (B, Q, D)
        lens = torch.full((x.shape[0],), n_feat, dtype=torch.long)
        return adapter(qformer(x.float(), lens, [grid] * x.shape[0]))

    def dev_accuracy() -> Dict[str, float]:
        qformer.eval()
        adapter.eval()
        with torch.no_grad():
            out = torch.cat([run(dev_x[i:i + 64]) for i in range(0, len(dev_paths), 64)])  # (N, Q, D)
            nearest = torch.cdist(out.reshape(-1, out.shape[-1]), table).argmin(1).reshape(out.shape[:2])
        right: Dict[str, List[bool]] = {k: [] for k in SLOTS + ("empty",)}
        for b, slots in enumerate(dev_slots):
            for q, (kind, w) in enumerate(slots):  # an empty cell's slots are counted apart
                right[kind if w else "empty"].append(words[int(nearest[b, q])] == w)
        qformer.train()
        adapter.train()
        return {k: round(sum(v) / len(v), 3) for k, v in right.items() if v}

    qformer.train()
    adapter.train()
    losses = []
    for epoch in range(args.epochs):
        order = torch.randperm(len(fit_paths))
        total = 0.0
        for i in range(0, len(order), args.batch):
            idx = order[i:i + args.batch]
            loss = ((run(fit_x[idx]) - fit_y[idx]) ** 2).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(order))
        if epoch % 10 == 9 or epoch == args.epochs - 1:
            logger.info("epoch %d: squared error %.3f; dev nearest-word accuracy %s", epoch + 1, losses[-1],
                        dev_accuracy())
    acc = dev_accuracy()
    qformer.eval()
    adapter.eval()
    with torch.no_grad():
        spread = float(torch.cat([run(dev_x[i:i + 64]) for i in range(0, len(dev_paths), 64)]).std(0).mean())

    save_model_dir(model, cfg, cfg.data.units, str(out_dir / "model"))  # the stage-2 weights + the fitted image path
    shutil.rmtree(png_dir)
    summary = {"fit_pictures": len(fit_paths), "training_scenes": len(train), "extra_scenes": len(extra),
               "dev_pictures": len(dev_paths), "epochs": args.epochs, "squared_error": losses[-1],
               "dev_nearest_word_accuracy": acc, "dev_spread_between_pictures": spread,
               "seconds": round(time.time() - t0, 1)}
    (out_dir / "align.json").write_text(json.dumps(summary, indent=1))
    logger.info("wrote %s in %.0f s: %s", out_dir, time.time() - t0, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
