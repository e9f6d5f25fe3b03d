"""Word/character error rates: normalize, align, count, and write the result files.

In: reference and hypothesis texts keyed by utterance id, and a normalizer name
(:mod:`xasr.scoring.normalize`). Out: a :class:`ScoreResult` with per-utterance alignments and
counts, totals, the error rate (WER, or CER for ``chinese_char``) and the top confusions;
:func:`write_results` writes the decode files

    recogs-{set}.txt   per utterance: "{id}:\\tref=[...]" and "{id}:\\thyp=[...]" (scored tokens)
    errs-{set}.txt     the %WER line, per-utterance alignments of utterances with errors,
                       then substitutions, deletions and insertions with counts, and
                       per-token statistics (PER-WORD STATS: correct, errors, count in the
                       references and in the hypotheses, as icefall writes them)
    wer-{set}.txt      the Kaldi line "%WER 4.21 [ 441 / 10476, 31 ins, 40 del, 370 sub ]"
                       (%CER for characters) and the normalizer name

    result = score(refs, hyps, normalizer="english_word")
    print(kaldi_line(result))
    write_results(result, "exp/decode", "test-clean", method="greedy")

Alignment is a Levenshtein alignment with unit costs (jiwer); character tokens are aligned as
words. A reference id without a hypothesis counts as all deletions (and is logged and listed in
``missing_ids``); a hypothesis id without a reference is an error.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import jiwer
import numpy as np

from xasr.errors import XasrError
from xasr.scoring.normalize import get_normalizer

logger = logging.getLogger(__name__)

EPS = "*"  # how a missing token is shown in alignments
AlignedPair = Tuple[Optional[str], Optional[str]]  # (ref token, hyp token); None = nothing there


class ScoringError(XasrError):
    """References and hypotheses do not fit together."""


@dataclass(frozen=True)
class UttScore:
    """One utterance: its scored tokens, the alignment and the error counts."""

    utt_id: str
    ref: Tuple[str, ...]
    hyp: Tuple[str, ...]
    alignment: Tuple[AlignedPair, ...]
    num_sub: int
    num_del: int
    num_ins: int
    missing: bool = False  # no hypothesis was given for this utterance

    @property
    def num_ref(self) -> int:
        return len(self.ref)

    @property
    def num_errors(self) -> int:
        return self.num_sub + self.num_del + self.num_ins


@dataclass(frozen=True)
class ScoreResult:
    """Scores of a set of utterances under one normalizer; utterances are sorted by id."""

    normalizer: str
    unit: str  # "WER" or "CER"
    utts: Tuple[UttScore, ...]
    missing_ids: Tuple[str, ...] = field(default=())

    @property
    def num_ref(self) -> int:
        return sum(u.num_ref for u in self.utts)

    @property
    def num_sub(self) -> int:
        return sum(u.num_sub for u in self.utts)

    @property
    def num_del(self) -> int:
        return sum(u.num_del for u in self.utts)

    @property
    def num_ins(self) -> int:
        return sum(u.num_ins for u in self.utts)

    @property
    def num_errors(self) -> int:
        return self.num_sub + self.num_del + self.num_ins

    @property
    def num_sentence_errors(self) -> int:
        return sum(1 for u in self.utts if u.num_errors > 0)

    @property
    def error_rate(self) -> float:
        """Errors / reference tokens as a fraction (0.0421 for 4.21%).

        With no reference tokens: 0.0 if there are no errors either, else infinity.
        """
        if self.num_ref == 0:
            return 0.0 if self.num_errors == 0 else float("inf")
        return self.num_errors / self.num_ref

    def rate(self, kind: str) -> float:
        """Fraction of reference tokens that are ``"sub"``, ``"del"`` or ``"ins"`` errors."""
        count = {"sub": self.num_sub, "del": self.num_del, "ins": self.num_ins}[kind]
        if self.num_ref == 0:
            return 0.0 if count == 0 else float("inf")
        return count / self.num_ref

    @property
    def ids(self) -> List[str]:
        return [u.utt_id for u in self.utts]

    def interval(self, confidence: float = 0.95, n_resamples: int = 1000, seed: int = 0) -> Tuple[float, float]:
        """Percentile bootstrap interval of :attr:`error_rate` over the utterances
        (:func:`xasr.scoring.stats.bootstrap_ci`); with no reference tokens, the rate itself twice."""
        from xasr.scoring.stats import bootstrap_ci

        if self.num_ref == 0:
            return self.error_rate, self.error_rate
        return bootstrap_ci(self.per_utt_errors(), self.per_utt_ref_lens(), n_resamples=n_resamples,
                            confidence=confidence, seed=seed)

    def per_utt_errors(self) -> np.ndarray:
        """Errors per utterance, in :attr:`ids` order (input to :mod:`xasr.scoring.stats`)."""
        return np.array([u.num_errors for u in self.utts], dtype=np.int64)

    def per_utt_ref_lens(self) -> np.ndarray:
        """Reference tokens per utterance, in :attr:`ids` order."""
        return np.array([u.num_ref for u in self.utts], dtype=np.int64)

    def substitutions(self) -> Counter:
        """Counter of (ref token, hyp token) substitution pairs."""
        return Counter((r, h) for u in self.utts for r, h in u.alignment
                       if r is not None and h is not None and r != h)

    def deletions(self) -> Counter:
        return Counter(r for u in self.utts for r, h in u.alignment if h is None)

    def insertions(self) -> Counter:
        return Counter(h for u in self.utts for r, h in u.alignment if r is None)

    def top_substitutions(self, n: Optional[int] = 20) -> List[Tuple[Tuple[str, str], int]]:
        """The ``n`` most frequent substitution pairs (all if None), by count, then by tokens."""
        return _top(self.substitutions(), n)

    def top_deletions(self, n: Optional[int] = 20) -> List[Tuple[str, int]]:
        return _top(self.deletions(), n)

    def top_insertions(self, n: Optional[int] = 20) -> List[Tuple[str, int]]:
        return _top(self.insertions(), n)


    def per_word_stats(self) -> List[Tuple[str, int, int, int, int]]:
        """Per token: (token, correct, errors it is part of, count in the references, count in the
        hypotheses), most errors first (then by token). A substitution counts an error for both
        its tokens; an insertion or deletion for its one."""
        stats: Dict[str, List[int]] = {}
        for u in self.utts:
            for r, h in u.alignment:
                if r is not None and r == h:
                    stats.setdefault(r, [0, 0, 0, 0])[0] += 1
                    continue
                if r is not None:
                    stats.setdefault(r, [0, 0, 0, 0])[1] += 1
                if h is not None:
                    stats.setdefault(h, [0, 0, 0, 0])[2] += 1
                if r is None:
                    stats[h][3] += 1  # an insertion: it is not in the references
        out = []
        for tok, (corr, as_ref, as_hyp, ins) in stats.items():
            out.append((tok, corr, as_ref + as_hyp, corr + as_ref, corr + as_hyp))
        return sorted(out, key=lambda t: (-t[2], t[0]))


def read_kaldi_text(path: Union[str, Path]) -> Dict[str, str]:
    """A Kaldi ``text`` file ("<id> <text>" per line; an id alone is an empty text) -> {id: text}.
    A repeated id is an error naming the file and both lines."""
    p = Path(path)
    if not p.is_file():
        raise ScoringError(f"{p}: no such file (a Kaldi text file: '<id> <text>' per line)")
    out: Dict[str, str] = {}
    first: Dict[str, int] = {}
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ScoringError(f"{p}: not UTF-8 text ({e})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if parts[0] in out:
            raise ScoringError(f"{p}: line {lineno} repeats the id {parts[0]} of line {first[parts[0]]}")
        out[parts[0]] = parts[1] if len(parts) > 1 else ""
        first[parts[0]] = lineno
    return out


def _top(counter: Counter, n: Optional[int]) -> list:
    items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    return items if n is None else items[:n]


def _utt_score(utt_id: str, ref: List[str], hyp: List[str], chunks: Sequence, missing: bool) -> UttScore:
    pairs: List[AlignedPair] = []
    n_sub = n_del = n_ins = 0
    for c in chunks:
        if c.type == "equal" or c.type == "substitute":
            pairs.extend(zip(ref[c.ref_start_idx:c.ref_end_idx], hyp[c.hyp_start_idx:c.hyp_end_idx]))
            if c.type == "substitute":
                n_sub += c.ref_end_idx - c.ref_start_idx
        elif c.type == "delete":
            pairs.extend((r, None) for r in ref[c.ref_start_idx:c.ref_end_idx])
            n_del += c.ref_end_idx - c.ref_start_idx
        elif c.type == "insert":
            pairs.extend((None, h) for h in hyp[c.hyp_start_idx:c.hyp_end_idx])
            n_ins += c.hyp_end_idx - c.hyp_start_idx
        else:
            raise AssertionError(f"unknown alignment chunk type {c.type!r}")
    return UttScore(utt_id=utt_id, ref=tuple(ref), hyp=tuple(hyp), alignment=tuple(pairs),
                    num_sub=n_sub, num_del=n_del, num_ins=n_ins, missing=missing)


def _list_ids(ids: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def score(refs: Mapping[str, str], hyps: Mapping[str, str], normalizer: str) -> ScoreResult:
    """Normalize, align and count every utterance of ``refs`` against ``hyps``.

    Raises :class:`ScoringError` if ``hyps`` has ids that ``refs`` lacks (they are listed).
    A reference without a hypothesis is scored against an empty hypothesis (all deletions) and a
    warning names it.
    """
    norm = get_normalizer(normalizer)
    extra = sorted(set(hyps) - set(refs))
    if extra:
        raise ScoringError(f"{len(extra)} hypothesis id(s) have no reference: {_list_ids(extra)}")
    ids = sorted(refs)
    missing = [i for i in ids if i not in hyps]
    if missing:
        logger.warning("%d of %d reference(s) have no hypothesis and count as all deletions: %s",
                       len(missing), len(ids), _list_ids(missing))
    ref_toks = [norm(refs[i]) for i in ids]
    hyp_toks = [norm(hyps[i]) if i in hyps else [] for i in ids]

    # One jiwer call for all utterances that have something to align.
    todo = [k for k in range(len(ids)) if ref_toks[k] or hyp_toks[k]]
    chunks: List[Sequence] = [[] for _ in ids]
    if todo:
        out = jiwer.process_words([" ".join(ref_toks[k]) for k in todo],
                                  [" ".join(hyp_toks[k]) for k in todo])
        for k, ch in zip(todo, out.alignments):
            chunks[k] = ch
    missing_set = set(missing)
    utts = tuple(_utt_score(i, r, h, c, i in missing_set)
                 for i, r, h, c in zip(ids, ref_toks, hyp_toks, chunks))
    return ScoreResult(normalizer=norm.name, unit=norm.unit, utts=utts, missing_ids=tuple(missing))


# ----------------------------------------------------------------------------- output

def _percent(x: float) -> str:
    return f"{100.0 * x:.2f}"


def kaldi_line(result: ScoreResult) -> str:
    """``%WER 4.21 [ 441 / 10476, 31 ins, 40 del, 370 sub ]`` (``%CER`` for characters)."""
    return (f"%{result.unit} {_percent(result.error_rate)} [ {result.num_errors} / {result.num_ref}, "
            f"{result.num_ins} ins, {result.num_del} del, {result.num_sub} sub ]")


def _ser_line(result: ScoreResult) -> str:
    n = len(result.utts)
    ser = result.num_sentence_errors / n if n else 0.0
    return f"%SER {_percent(ser)} [ {result.num_sentence_errors} / {n} ]"


def _scored_line(result: ScoreResult) -> str:
    return f"Scored {len(result.utts)} sentences, {len(result.missing_ids)} not present in hyp."


def format_alignment(alignment: Sequence[AlignedPair]) -> str:
    """``A (B->X) C (D->*) (*->E)``: correct tokens as they are, errors as (REF->HYP)."""
    parts = []
    for r, h in alignment:
        if r is not None and r == h:
            parts.append(r)
        else:
            parts.append(f"({EPS if r is None else r}->{EPS if h is None else h})")
    return " ".join(parts)


def _file_name(kind: str, set_name: str, method: Optional[str]) -> str:
    return f"{kind}-{set_name}" + (f"-{method}" if method else "") + ".txt"


def write_results(result: ScoreResult, out_dir: Union[str, Path], set_name: str,
                  method: Optional[str] = None, top_n: Optional[int] = None) -> Dict[str, Path]:
    """Write ``recogs-``, ``errs-`` and ``wer-{set}[-{method}].txt`` into ``out_dir``.

    ``top_n`` limits the confusion sections of the errs file (None: all of them). Returns the
    paths keyed by ``"recogs"``, ``"errs"`` and ``"wer"``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / _file_name(k, set_name, method) for k in ("recogs", "errs", "wer")}
    unit_word = "characters" if result.unit == "CER" else "words"

    with open(paths["recogs"], "w", encoding="utf-8") as f:
        for u in result.utts:
            f.write(f"{u.utt_id}:\tref={list(u.ref)}\n")
            f.write(f"{u.utt_id}:\thyp={list(u.hyp)}\n")

    with open(paths["errs"], "w", encoding="utf-8") as f:
        f.write(kaldi_line(result) + "\n")
        f.write(f"normalizer: {result.normalizer}\n")
        f.write(f"Errors: {result.num_ins} insertions, {result.num_del} deletions, "
                f"{result.num_sub} substitutions, over {result.num_ref} reference {unit_word} "
                f"({result.num_ref - result.num_sub - result.num_del} correct)\n")
        if result.missing_ids:
            f.write(f"Missing hypotheses (scored as all deletions): {' '.join(result.missing_ids)}\n")
        f.write("\nPER-UTT DETAILS: utterances with errors, correct tokens or (REF->HYP)\n")
        for u in result.utts:
            if u.num_errors:
                f.write(f"{u.utt_id}:\t{format_alignment(u.alignment)}\n")
        f.write("\nSUBSTITUTIONS: count ref -> hyp\n")
        for (r, h), c in result.top_substitutions(top_n):
            f.write(f"{c}\t{r} -> {h}\n")
        f.write("\nDELETIONS: count ref\n")
        for r, c in result.top_deletions(top_n):
            f.write(f"{c}\t{r}\n")
        f.write("\nINSERTIONS: count hyp\n")
        for h, c in result.top_insertions(top_n):
            f.write(f"{c}\t{h}\n")
        f.write("\nPER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp\n")
        for tok, corr, errs, n_ref, n_hyp in result.per_word_stats()[:top_n]:
            f.write(f"{tok}   {corr} {errs} {n_ref} {n_hyp}\n")

    with open(paths["wer"], "w", encoding="utf-8") as f:
        f.write(kaldi_line(result) + "\n")
        f.write(_ser_line(result) + "\n")
        f.write(_scored_line(result) + "\n")
        f.write(f"normalizer: {result.normalizer}\n")

    logger.info("%s %s%s: %s (details in %s)", set_name, result.normalizer,
                f" {method}" if method else "", kaldi_line(result), paths["errs"])
    return paths
