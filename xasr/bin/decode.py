"""Decode test sets with a trained model directory and score them (WER/CER files per set and method).

Usage:
  xasr decode --model-dir exp/stage2/model --cuts test=data/fbank/aishell_cuts_test.jsonl.gz \
      --methods ctc_greedy cif_greedy llm_greedy llm_beam --out-dir exp/stage2/decode --normalizer chinese_char
  # a stage-3 model reads each cut's picture; the control: mismatched pictures, or none
  xasr decode --model-dir exp/stage3/model --cuts test=data/manifests/scenes_cuts_test.jsonl.gz \
      --methods llm_greedy --out-dir exp/stage3/decode_shuffled --image-shuffle-seed 0
  xasr decode --model-dir exp/stage3/model --cuts test=data/manifests/scenes_cuts_test.jsonl.gz \
      --methods llm_greedy --out-dir exp/stage3/decode_no_image --no-images
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from xasr.decoding.options import PROMPT_DRAFTS, VOCABS
from xasr.errors import XasrError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", required=True)
    p.add_argument("--cuts", nargs="+", required=True, help="NAME=PATH of cut manifests with features")
    p.add_argument("--methods", nargs="+", default=["llm_greedy"])
    p.add_argument("--out-dir", required=True)
    p.add_argument("--normalizer", default="english_word", help="chinese_char, english_word or none")
    p.add_argument("--models-dir", default=None, help="where the frozen pretrained models are installed")
    p.add_argument("--max-duration", type=float, default=60.0, help="seconds of audio per batch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--image-dir", default=None,
                   help="where relative picture paths of the cuts are taken from (default: the model's data.image_dir)")
    p.add_argument("--image-shuffle-seed", type=int, default=None,
                   help="permute the pictures across each set's cuts (mismatched-image control)")
    p.add_argument("--no-images", action="store_true", help="decode a model with the image path without pictures")
    p.add_argument("--repeat-ngram", type=int, default=None,
                   help="cut an LLM output where a run of this many tokens repeats (0: off; default: the model's "
                        "model.repeat_ngram)")
    p.add_argument("--ctc-weight", type=float, default=None,
                   help="llm_ctc and llm_rescore: weight of the CTC score against the LLM's, in [0, 1] (default: "
                        "the model's model.joint_ctc_weight / model.rescore_ctc_weight)")
    p.add_argument("--length-bonus", type=float, default=None,
                   help="llm_ctc and llm_rescore: score added per CTC unit of a hypothesis (default: "
                        "model.joint_length_bonus / model.rescore_length_bonus)")
    p.add_argument("--lm-weight", type=float, default=None,
                   help="ctc_beam and llm_rescore: weight of the model's n-gram LM in the CTC prefix search, >= 0 "
                        "(0 with --lm-bonus 0: no LM; default: the model's model.ngram.weight)")
    p.add_argument("--lm-bonus", type=float, default=None,
                   help="ctc_beam and llm_rescore: score added per LM word (character) (default: model.ngram.token_bonus)")
    p.add_argument("--homophone-scale", type=float, default=None,
                   help="ctc_beam and llm_rescore with a CTC head that ties homophones: scale of a unit's share of "
                        "its class in the prefix search, in [0, 1] (1: off; default: the model's model.homophone_scale)")
    p.add_argument("--llm-vocab", choices=VOCABS, default=None,
                   help="LLM decodings: score the LLM's whole vocabulary or only the tokens the units spell "
                        "(faster; default: the model's model.llm_vocab)")
    p.add_argument("--prompt-draft", choices=PROMPT_DRAFTS, default=None,
                   help="LLM decodings of a model trained with drafts (model.llm_draft=ctc): the draft in the prompt, "
                        "the CTC head's greedy text, the CTC prefix search's best path, or none (a model trained "
                        "with model.draft_share < 1) (default: the model's model.prompt_draft); not llm_rescore's")
    p.add_argument("--rescore-draft", choices=PROMPT_DRAFTS, default=None,
                   help="the same for llm_rescore's prompt (default: the model's model.rescore_draft)")
    p.add_argument("--save-decoding", action="store_true",
                   help="with --tune-rescore-on: write llm_rescore and the weights chosen into the model directory's "
                        "decoding.json, so that xasr transcribe uses them by default")
    p.add_argument("--tune-rescore-on", default=None, metavar="SET",
                   help="choose llm_rescore's CTC weight and length bonus on this set of --cuts (decoded first; "
                        "grid and plot in --out-dir/tune-SET.*, the choice in rescore-weights.json), then use "
                        "them for the other sets")


def run(args: argparse.Namespace) -> int:
    import torch

    from xasr.models.image_encoder import image_loading
    from xasr.decoding.dataset_decode import decode_and_score
    from xasr.decoding.methods import check_methods, options_for
    from xasr.model_dir import load_model_dir

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from xasr.utils.named import parse_named

    from xasr.bin.options import check_files, check_normalizer, check_positive
    from xasr.model_dir import check_model_dir

    sets = parse_named(args.cuts, "--cuts")
    check_normalizer(args.normalizer)
    check_positive(args.max_duration, "--max-duration")
    check_positive(args.threads, "--threads", allow_zero=True)
    check_positive(args.repeat_ngram, "--repeat-ngram (0: off)", allow_zero=True)
    if args.ctc_weight is not None and not 0.0 <= args.ctc_weight <= 1.0:
        raise XasrError(f"--ctc-weight must be in [0, 1], not {args.ctc_weight}")
    check_methods(args.methods, "--methods")
    if args.lm_weight is not None and not args.lm_weight >= 0.0:
        raise XasrError(f"--lm-weight must be >= 0, not {args.lm_weight}")
    if args.tune_rescore_on is not None and "llm_rescore" not in args.methods:
        raise XasrError("--tune-rescore-on chooses llm_rescore's weights: add llm_rescore to --methods")
    if args.tune_rescore_on is not None and args.tune_rescore_on not in sets:
        raise XasrError(f"--tune-rescore-on {args.tune_rescore_on}: no such set among --cuts ({', '.join(sets)})")
    if args.save_decoding and args.tune_rescore_on is None:
        raise XasrError("--save-decoding records the weights --tune-rescore-on chooses: give --tune-rescore-on")
    check_files(sets, "--cuts")
    check_model_dir(args.model_dir, "--model-dir")
    model, cfg, units = load_model_dir(args.model_dir, models_dir=args.models_dir, device=args.device)
    opts = options_for(model, homophone_scale=args.homophone_scale, repeat_ngram=args.repeat_ngram,
                       lm_weight=args.lm_weight, lm_token_bonus=args.lm_bonus, llm_vocab=args.llm_vocab,
                       prompt_draft=args.prompt_draft, rescore_draft=args.rescore_draft
                       ).with_ctc_weights(args.ctc_weight, args.length_bonus)
    images = None if args.no_images else image_loading(cfg.data, cfg.model.image.encoder, args.image_dir)
    if args.image_shuffle_seed is not None and images is None:
        raise XasrError("--image-shuffle-seed needs a model trained with pictures (data.images) and no --no-images")
    summaries = decode_and_score(model, units, sets, args.methods, args.out_dir, args.normalizer,
                                 features=cfg.data.features, max_duration=args.max_duration, device=args.device,
                                 images=images, image_shuffle_seed=args.image_shuffle_seed,
                                 tune_on=args.tune_rescore_on, opts=opts)
    if args.save_decoding:
        from xasr.model_dir import save_decoding

        tuned = json.loads(Path(args.out_dir, "rescore-weights.json").read_text())
        settings = {"rescore_ctc_weight": tuned["ctc_weight"], "rescore_length_bonus": tuned["length_bonus"]}
        if opts.homophone_scale != 1.0:  # the N-best the weights were tuned on came from this search
            settings["homophone_scale"] = opts.homophone_scale
        if opts.llm_vocab != "full":  # and the LLM scores of the grid were over this vocabulary
            settings["llm_vocab"] = opts.llm_vocab
        if cfg.model.llm_draft != "none":  # and with this draft in their prompt
            settings["rescore_draft"] = opts.rescore_draft
        path = save_decoding(args.model_dir, "llm_rescore", settings,
                             tuned_on=tuned["tuned_on"], nbest=tuned["nbest"], error_rate=tuned["error_rate"],
                             unit=tuned["unit"])
        logging.getLogger("xasr").info("%s: llm_rescore with ctc_weight %s, length_bonus %s (tuned on %s)", path,
                                       tuned["ctc_weight"], tuned["length_bonus"], tuned["tuned_on"])
    with open(f"{args.out_dir}/summary.json", "w") as f:
        json.dump([dict(s.__dict__, rtf=s.rtf) for s in summaries], f, indent=1)
    for s in summaries:
        print(f"{s.set_name}\t{s.method}\t{s.kaldi_line}\tRTF {s.rtf:.3f}" + (f"\t{s.note}" if s.note else ""))
    return 0
