"""Logging set-up shared by every entry point: time, level, file:line (and rank under DDP)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

FORMAT = "%(asctime)s %(levelname)s [%(filename)s:%(lineno)d]{rank} %(message)s"


def setup_logging(log_file: Optional[str] = None, level: int = logging.INFO) -> None:
    """Log to stderr and, if given, to ``log_file`` (its directory is created)."""
    rank = os.environ.get("RANK")
    fmt = FORMAT.format(rank=f" (rank {rank})" if rank is not None else "")
    handlers = [logging.StreamHandler()]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    logging.basicConfig(level=level, format=fmt, datefmt="%Y-%m-%d %H:%M:%S", handlers=handlers, force=True)
