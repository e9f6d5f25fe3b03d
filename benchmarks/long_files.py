"""Long test files for the benchmarks that segment audio (word_times.py, vad_compare.py):
utterances joined with pauses of known, random length."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np


def join_with_pauses(signals: Sequence[np.ndarray], rng: np.random.Generator, min_pause: float,
                     max_pause: float, rate: int = 16000, tail: float = 1.0) -> Tuple[np.ndarray, List[float]]:
    """One float32 signal: each of ``signals`` after a pause drawn uniformly from
    [min_pause, max_pause] seconds (one draw per signal, in order), then ``tail`` seconds of
    silence. Returns it and the second at which each signal starts."""
    parts, starts, n = [], [], 0
    for x in signals:
        pause = np.zeros(int(rng.uniform(min_pause, max_pause) * rate), np.float32)
        parts += [pause, x]
        n += len(pause)
        starts.append(n / rate)
        n += len(x)
    parts.append(np.zeros(int(tail * rate), np.float32))
    return np.concatenate(parts), starts
