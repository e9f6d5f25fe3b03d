"""Homophone classes for the CTC prefix search: let the LM, not the CTC head, choose among
characters that sound the same.

In: the units' pieces and each character's reading (a toned syllable, e.g. from espeak-ng's
Mandarin voice: :func:`espeak_readings`); a CTC head's log-probabilities (T, V).
Out: ``classes`` (V,), a class id per unit (units that read the same share one; every other
unit, the blank included, has its own), and :func:`class_log_probs`, the log-probabilities
with the mass of each class moved towards being shared by its members.

Why: a character CTC head trained on Mandarin splits the probability of a syllable among its
homophones by their frequency in the training text, a unigram prior the audio says nothing
about. With ``scale`` s, a unit's log-probability becomes

    log P(class | frame) + s * log P(unit | class, frame)

s = 1 leaves the head as it is; s = 0 gives every homophone its class's whole probability, so
the n-gram LM fused into the search decides alone among them. The prefix search then treats the
class as the CTC label (two units of one class in a row need a blank between them) and tries
every member of the classes it extends by (:func:`xasr.decoding.rescore.ctc_prefix_search`).
"""
from __future__ import annotations

import shutil
import subprocess
from typing import Dict, Iterable, Optional, Sequence

import numpy as np

from xasr.errors import XasrError


def espeak_readings(chars: Iterable[str], voice: Optional[str] = None) -> Dict[str, str]:
    """{character: its phonemes as espeak-ng's ``voice`` (default: the voice that reads the
    built-in Mandarin corpus) reads it alone}, in one espeak-ng call; symbols (not letters or
    digits: espeak-ng says nothing for most) have no reading."""
    if voice is None:
        from xasr.corpora.synth import MANDARIN_VOICE as voice
    chars = sorted(c for c in set(chars) if c.isalnum())
    if not chars:
        return {}
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise XasrError("homophone classes need espeak-ng (apt install espeak-ng)")
    out = subprocess.run([exe, "-v", voice, "-x", "-q"], input="\n".join(chars) + "\n", capture_output=True,
                         text=True, check=True).stdout
    lines = [x.strip() for x in out.splitlines() if x.strip()]
    if len(lines) != len(chars):  # a character espeak-ng skipped: one call each
        lines = [subprocess.run([exe, "-v", voice, "-x", "-q"], input=c + "\n", capture_output=True,
                                text=True).stdout.strip() for c in chars]
    return {c: r.replace("_|", "").replace("_", "").strip() for c, r in zip(chars, lines) if r.strip()}


def unit_classes(pieces: Sequence[str], readings: Dict[str, str]) -> np.ndarray:
    """(V,) class ids: units whose piece (without "▁") is one character with a reading share the
    class of that reading; every other unit gets a class of its own."""
    ids: Dict[str, int] = {}
    out = np.empty(len(pieces), dtype=np.int64)
    for u, piece in enumerate(pieces):
        text = piece.replace("\u2581", "")
        key = f"r:{readings[text]}" if len(text) == 1 and text in readings else f"u:{u}"
        out[u] = ids.setdefault(key, len(ids))
    return out


def homophone_classes(pieces: Sequence[str]) -> np.ndarray:
    """(V,) class ids of the units (:func:`unit_classes`) from espeak-ng's readings of their characters."""
    return unit_classes(pieces, espeak_readings(c for p in pieces for c in p.replace("\u2581", "")))


def class_log_probs(log_probs: np.ndarray, classes: np.ndarray, scale: float) -> np.ndarray:
    """(T, V) log-probabilities with each unit's share of its class raised to ``scale`` (see the
    module docstring); ``scale`` 1 returns them unchanged."""
    if scale == 1.0:
        return log_probs
    lp = np.asarray(log_probs, dtype=np.float64)
    m = lp.max(axis=1, keepdims=True)
    probs = np.exp(lp - m)
    sums = np.zeros((lp.shape[0], int(classes.max()) + 1))
    np.add.at(sums.T, classes, probs.T)  # per class: the sum of its members' probabilities
    class_lp = np.log(np.maximum(sums[:, classes], 1e-300)) + m  # (T, V): each unit's class
    return class_lp + scale * (lp - class_lp)


def expand_pool(pool: np.ndarray, classes: Optional[np.ndarray], blank: int = 0) -> np.ndarray:
    """The units of every class with a unit in ``pool`` (the blank left out), sorted."""
    if classes is None:
        return pool
    members = np.nonzero(np.isin(classes, classes[pool]))[0]
    return members[members != blank]
