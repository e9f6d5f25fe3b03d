"""Progress bars for long work a person watches: live on a terminal, a line every 15 s in logs."""
from __future__ import annotations

import sys

from tqdm import tqdm


def progress(total: int, desc: str, unit: str = "it") -> tqdm:
    tty = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=tty, mininterval=0.2 if tty else 15.0,
                ascii=not tty)
