"""NAME=VALUE command-line items (``--cuts dev=a.jsonl.gz test=b.jsonl.gz``) as a dict.

In: the items and the option's name (for the error). Out: {name: value} in the given order;
an item without a name or a value, or a name given twice, is a named error.
"""
from __future__ import annotations

from typing import Dict, Sequence

from xasr.errors import XasrError


def parse_named(items: Sequence[str], what: str) -> Dict[str, str]:
    """``["a=x", "b=y"]`` -> ``{"a": "x", "b": "y"}``; a bad or repeated item is an error."""
    out: Dict[str, str] = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[0] or not item.split("=", 1)[1]:
            raise XasrError(f"{what} takes NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        if name in out:
            raise XasrError(f"{what}: {name!r} is given twice")
        out[name] = value
    return out
