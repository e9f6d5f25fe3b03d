"""The ``xasr`` command: one subcommand per entry point module in xasr/bin.

Usage:
  xasr --help
  xasr synth-corpus --corpus aishell --out-dir download/aishell_synth --train-hours 1.0
  xasr prepare --corpus aishell --corpus-dir download/aishell_synth --output-dir data/manifests
  xasr compute-fbank --corpus aishell --manifest-dir data/manifests --output-dir data/fbank
  xasr train-units --cuts data/manifests/aishell_cuts_train.jsonl.gz --lang-dir data/lang_char --type char
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import List, Optional

from xasr.errors import XasrError
from xasr.utils.logging import setup_logging
from xasr.utils.usage import record_usage

# subcommand -> module in xasr.bin (each defines add_arguments(parser) and run(args))
SUBCOMMANDS = {
    "synth-corpus": "synth_corpus",
    "synth-scenes": "synth_scenes",
    "prepare": "prepare",
    "compute-fbank": "compute_fbank",
    "train-units": "train_units",
    "train-lm": "train_lm",
    "cache-encoder": "cache_encoder",
    "align-adapter": "align_adapter",
    "train": "train",
    "decode": "decode",
    "score": "score",
    "tune-rescore": "tune_rescore",
    "mm-results": "mm_results",
    "models": "models",
    "benchmark": "benchmark",
    "transcribe": "transcribe",
    "serve": "serve",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xasr", description="xasr: LLM-based speech recognition toolkit")
    parser.add_argument("--log-file", default=None, help="also write the log to this file")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(f"xasr.bin.{module_name}")
        doc = (module.__doc__ or "").strip()
        p = sub.add_parser(name, help=doc.splitlines()[0] if doc else None, description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--log-file", default=argparse.SUPPRESS, help="also write the log to this file")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    import time

    start = time.time()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    log_file = args.log_file
    rank = int(os.environ.get("RANK", "0"))
    if log_file and rank > 0:  # under torchrun: one log per rank, not interleaved lines
        log_file = f"{log_file}.rank{rank}"
    setup_logging(log_file)
    status = 1
    try:
        status = int(args._run(args) or 0)
    except KeyboardInterrupt:
        logging.getLogger("xasr").error("interrupted")
        status = 130
    except (XasrError, FileNotFoundError) as e:  # messages meant for the user: no traceback
        logging.getLogger("xasr").error("%s", e)
        status = getattr(e, "exit_status", 1)
    finally:
        record_usage(args.command, argv, start, status)  # with $XASR_USAGE_LOG set (the recipes)
    return status


if __name__ == "__main__":
    sys.exit(main())
