"""Word timestamps from the CTC head: forced alignment of a transcript to the CTC posteriors.

In: one utterance's CTC log-probabilities (T, V) over its valid frames, the transcript's unit
ids (whatever decoding wrote the text: it is re-encoded with the model's units), the units'
pieces and the time one frame spans.
Out: ``[{"word", "start", "end", "probability"}]`` in seconds from the utterance's start.

The alignment is the Viterbi path of the CTC topology (blank, unit 1, blank, unit 2, ...,
blank; a unit may repeat over frames, blanks may be skipped between different units). A word
starts at the first frame of its first unit and ends after the last frame of its last unit;
``probability`` is the mean posterior of its units over their aligned frames. A new word
starts after whitespace in the text and at every CJK character.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from xasr.scoring.normalize import is_cjk

def ctc_forced_align(log_probs: np.ndarray, targets: Sequence[int], blank: int = 0
                     ) -> Optional[List[Tuple[int, int]]]:
    """For each target unit, (first frame, last frame + 1) on the best CTC path, or None when
    the frames are too few for the targets (each unit needs a frame, repeats a blank between)."""
    T, L = log_probs.shape[0], len(targets)
    if L == 0:
        return []
    ext = np.full(2 * L + 1, blank, dtype=np.int64)
    ext[1::2] = np.asarray(targets, dtype=np.int64)
    S = len(ext)
    # a skip over the blank between two units is allowed when they differ
    skip = np.zeros(S, dtype=bool)
    skip[3::2] = ext[3::2] != ext[1:-2:2]
    neg = -np.inf
    dp = np.full(S, neg)
    dp[0] = log_probs[0, blank]
    dp[1] = log_probs[0, ext[1]]
    back = np.zeros((T, S), dtype=np.int8)  # 0: stay, 1: from s-1, 2: from s-2
    for t in range(1, T):
        one = np.concatenate(([neg], dp[:-1]))
        two = np.where(skip, np.concatenate(([neg, neg], dp[:-2])), neg)
        cand = np.stack([dp, one, two])
        back[t] = cand.argmax(axis=0)
        dp = cand.max(axis=0) + log_probs[t, ext]
    ends = [S - 1, S - 2] if S > 1 else [S - 1]
    s = max(ends, key=lambda k: dp[k])
    if not np.isfinite(dp[s]):
        return None
    states = np.empty(T, dtype=np.int64)
    for t in range(T - 1, -1, -1):
        states[t] = s
        s -= int(back[t, s])
    spans = []
    for k in range(L):
        frames = np.nonzero(states == 2 * k + 1)[0]
        if len(frames) == 0:
            return None
        spans.append((int(frames[0]), int(frames[-1]) + 1))
    return spans


# seconds added before and after each word by transcription (xasr.transcribe.api): chosen on the
# Aishell recipe's dev set with benchmarks/word_times.py (recipes/aishell/RESULTS.md)
WORD_LEAD = 0.15
WORD_TRAIL = 0.4

def _fragments(surface: str) -> List[Tuple[str, str]]:
    """(kind, text) runs of a piece's text: "space" and "other" runs, and each CJK character
    (:func:`xasr.scoring.normalize.is_cjk`) alone as "cjk"."""
    out: List[Tuple[str, str]] = []
    for ch in surface:
        kind = "space" if ch.isspace() else "cjk" if is_cjk(ch) else "other"
        if out and kind != "cjk" and out[-1][0] == kind:
            out[-1] = (kind, out[-1][1] + ch)
        else:
            out.append((kind, ch))
    return out


def split_words(text: str, units) -> List[Tuple[str, List[int], List[int]]]:
    """The words of ``text`` as (word, unit ids, positions of those units in the encoding) from
    the units' encoding of it: whitespace separates words and each CJK character is one. A
    piece the units cannot write (the unknown id) contributes its text but no unit."""
    proto = units.encode(text, return_type="proto")
    unk = units.unk_id()
    words: List[Tuple[str, List[int], List[int]]] = []
    new_word = True
    for pos, piece in enumerate(proto.pieces):
        for kind, frag in _fragments(piece.surface):
            if kind == "space":
                new_word = True
                continue
            if new_word or kind == "cjk" or (words and is_cjk(words[-1][0][-1])):
                words.append((frag, [], []))
                new_word = False
            else:
                words[-1] = (words[-1][0] + frag, words[-1][1], words[-1][2])
            if piece.id != unk and pos not in words[-1][2]:
                words[-1][1].append(piece.id)
                words[-1][2].append(pos)
    return words


def word_timestamps(log_probs: np.ndarray, text: str, units, frame_seconds: float, blank: int = 0,
                    offset: float = 0.0, lead: float = 0.0, trail: float = 0.0) -> List[dict]:
    """Words of ``text`` with their times (seconds, plus ``offset``) from the CTC posteriors
    ``log_probs`` (T, V) of its utterance; ``units`` is the model's sentencepiece processor.
    Text the units cannot write is left out of the alignment: its words get the end of the word
    before as start and end, and probability 0. Empty when the transcript cannot be aligned.

    CTC puts a unit's spike inside the sound, not at its edges: ``lead`` seconds are added before
    each word and ``trail`` after it, never past the utterance or into the next or previous word."""
    words = split_words(text, units)
    targets = [i for _, ids, _ in words for i in ids]
    spans = ctc_forced_align(log_probs, targets, blank)
    if spans is None:
        return []
    out, k, last_end = [], 0, 0.0
    for word, ids, _ in words:
        mine = spans[k:k + len(ids)]
        k += len(ids)
        if not mine:
            out.append({"word": word, "start": last_end, "end": last_end, "probability": 0.0})
            continue
        start, end = mine[0][0] * frame_seconds, mine[-1][1] * frame_seconds
        prob = float(np.mean([np.exp(log_probs[a:b, i]).mean() for (a, b), i in zip(mine, ids)]))
        out.append({"word": word, "start": start, "end": end, "probability": round(prob, 4)})
        last_end = end
    out = pad_words(out, lead, trail, 0.0, log_probs.shape[0] * frame_seconds)
    for w in out:
        w["start"], w["end"] = round(offset + w["start"], 3), round(offset + w["end"], 3)
    return out


def pad_words(words: List[dict], lead: float, trail: float, begin: float, end: float) -> List[dict]:
    """Copies of ``words`` with ``lead`` seconds added before each aligned word (probability > 0)
    and ``trail`` after it, within [begin, end] and never into a neighbouring word."""
    out = [dict(w) for w in words]
    timed = [w for w in out if w["probability"] > 0]
    original = [(w["start"], w["end"]) for w in timed]
    for k, w in enumerate(timed):
        before = timed[k - 1]["end"] if k else begin
        after = original[k + 1][0] if k + 1 < len(timed) else end
        w["start"], w["end"] = max(before, w["start"] - lead), min(after, w["end"] + trail)
    return out
