"""Checks of command-line options that the entry points run before any model is loaded, so a
typo costs a second, not the minutes of loading an LLM. Each raises XasrError naming the option."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from xasr.errors import XasrError


def check_files(named: Dict[str, str], option: str, what: str = "cut manifest") -> None:
    """Every NAME=PATH of ``option`` names an existing file."""
    for name, path in named.items():
        if not Path(path).is_file():
            raise XasrError(f"{option} {name}={path}: no such {what}")


def check_normalizer(name: str, option: str = "--normalizer") -> None:
    from xasr.scoring.normalize import NormalizerError, get_normalizer

    try:
        get_normalizer(name)
    except NormalizerError as e:
        raise XasrError(f"{option}: {e}") from None


def check_positive(value: Optional[float], option: str, allow_zero: bool = False) -> None:
    """None (unset) passes; otherwise value > 0 (or >= 0 with ``allow_zero``)."""
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise XasrError(f"{option} must be {'>= 0' if allow_zero else '> 0'}, not {value}")
