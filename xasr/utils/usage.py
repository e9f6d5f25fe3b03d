"""What a command cost: wall time and peak resident memory, appended as one JSON line.

In: a file path (the ``XASR_USAGE_LOG`` environment variable, which the recipes set to
``log/usage.jsonl``), the command's name and arguments, its start time. Out: one line
``{"command", "args", "start", "wall_seconds", "peak_rss_gb", "children_peak_rss_gb", "status"}``
appended to the file. Peak RSS is ``getrusage``'s ``ru_maxrss`` of the process and, separately,
of its largest finished child process (worker pools); the recipes' results read these lines to
report the wall time of each stage and the peak memory of the whole run. Under torchrun every
rank appends its own line, with ``"rank"``, ``"world_size"`` and torchrun's ``"run_id"``: the
ranks of one launch run side by side, so their peaks add up.
"""
from __future__ import annotations

import json
import os
import resource
import time
from typing import Optional, Sequence

ENV = "XASR_USAGE_LOG"


def peak_rss_gb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size in GB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(who).ru_maxrss * 1024 / 1e9


def record_usage(command: str, args: Sequence[str], start: float, status: int,
                 path: Optional[str] = None) -> None:
    """Append the command's cost to ``path`` (default: $XASR_USAGE_LOG; nothing if unset)."""
    path = path or os.environ.get(ENV)
    if not path:
        return
    row = {"command": command, "args": list(args), "start": round(start, 3),
           "wall_seconds": round(time.time() - start, 3), "peak_rss_gb": round(peak_rss_gb(), 4),
           "children_peak_rss_gb": round(peak_rss_gb(resource.RUSAGE_CHILDREN), 4), "status": status}
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        row.update(rank=int(os.environ.get("RANK", "0")), world_size=int(os.environ["WORLD_SIZE"]),
                   run_id=os.environ.get("TORCHELASTIC_RUN_ID", ""))
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def peak_memory() -> str:
    """Peak resident memory of this process (and peak GPU memory when on CUDA), in GB (1e9 bytes)
    as in the usage lines."""
    import torch

    text = f"{peak_rss_gb():.2f} GB RSS"
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        text += f", {torch.cuda.max_memory_allocated() / 1e9:.2f} GB on the GPU"
    return text
