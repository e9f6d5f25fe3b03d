"""How sure is an error rate, and is one system really better than another?

In: per-utterance error counts and reference lengths (``ScoreResult.per_utt_errors()`` and
``ScoreResult.per_utt_ref_lens()``; two systems must be scored on the same utterances, in the
same order). Out: numbers only.

  - :func:`bootstrap_ci`: percentile bootstrap confidence interval of the corpus error rate,
    resampling whole utterances (Bisani & Ney, ICASSP 2004).
  - :func:`paired_bootstrap_test`: one-sided p-value that system B is not better than system A,
    from paired resamples of utterances (Bisani & Ney 2004: 1 - "probability of improvement").
  - :func:`mapsswe_test`: the matched-pairs sentence-segment word error test (Gillick & Cox,
    ICASSP 1989; NIST sctk), with utterances as segments; normal approximation, two-sided.

Error rates are fractions (0.0421 for 4.21%). Everything is vectorised with numpy and seeded:
the same inputs and seed give the same numbers.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence, Tuple, Union

import numpy as np

ArrayLike = Union[Sequence[float], np.ndarray]

# Resamples are drawn in blocks of about this many indices, to bound memory on big test sets.
_BLOCK_ELEMENTS = 1 << 22


def _as_counts(name: str, x: ArrayLike) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if np.any(a < 0) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite and non-negative")
    return a


def _check_same_length(**arrays: np.ndarray) -> None:
    sizes = {k: v.size for k, v in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError("per-utterance arrays differ in length: "
                         + ", ".join(f"{k}={n}" for k, n in sizes.items()))


def _resample_blocks(n_items: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Index arrays of shape (R_block, n_items), drawn with replacement; R_block sums to n_resamples."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // n_items)
    done = 0
    while done < n_resamples:
        r = min(block, n_resamples - done)
        yield rng.integers(0, n_items, size=(r, n_items))  # (r, N)
        done += r


def bootstrap_ci(per_utt_errors: ArrayLike, per_utt_ref_lens: ArrayLike, n_resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> Tuple[float, float]:
    """Percentile bootstrap interval ``(low, high)`` of the error rate sum(errors) / sum(ref lens).

    Each resample draws N utterances with replacement from the N given; its error rate is
    sum(errors) / sum(ref lens) over the drawn utterances. ``low`` and ``high`` are the
    (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of the resampled rates (linear
    interpolation). Resamples with no reference tokens at all are left out.
    """
    errors = _as_counts("per_utt_errors", per_utt_errors)
    lens = _as_counts("per_utt_ref_lens", per_utt_ref_lens)
    _check_same_length(per_utt_errors=errors, per_utt_ref_lens=lens)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if lens.sum() == 0:
        raise ValueError("the reference has no tokens: the error rate is undefined")
    rates = []
    for idx in _resample_blocks(errors.size, n_resamples, seed):
        e = errors[idx].sum(axis=1)  # (r,)
        n = lens[idx].sum(axis=1)  # (r,)
        rates.append(e[n > 0] / n[n > 0])
    all_rates = np.concatenate(rates)
    if all_rates.size == 0:
        raise ValueError("every resample has zero reference tokens")
    alpha = 1.0 - confidence
    low, high = np.quantile(all_rates, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def paired_bootstrap_test(errors_a: ArrayLike, errors_b: ArrayLike, ref_lens: ArrayLike,
                          n_resamples: int = 1000, seed: int = 0) -> float:
    """One-sided p-value for "system B is better than system A" (Bisani & Ney 2004).

    Each resample draws the same N utterance indices (with replacement) for both systems and
    compares their error rates on it; because both rates share the denominator sum(ref lens),
    this is the comparison of summed errors. The returned value is

        p = #{resamples where errors_B >= errors_A} / n_resamples

    i.e. the fraction of resamples on which B is NOT better than A, which is 1 minus Bisani
    and Ney's "probability of improvement". Ties count against B, so identical systems give
    p = 1.0, a B better on every utterance gives p = 0.0, and a B worse everywhere gives 1.0.
    To test "A is better than B", swap the arguments. The resolution is 1 / n_resamples: p = 0
    means p < 1 / n_resamples.
    """
    a = _as_counts("errors_a", errors_a)
    b = _as_counts("errors_b", errors_b)
    lens = _as_counts("ref_lens", ref_lens)
    _check_same_length(errors_a=a, errors_b=b, ref_lens=lens)
    diff = a - b  # (N,) > 0 where B makes fewer errors
    not_better = 0
    for idx in _resample_blocks(diff.size, n_resamples, seed):
        not_better += int(np.count_nonzero(diff[idx].sum(axis=1) <= 0))
    return not_better / n_resamples


def mapsswe_test(errors_a: ArrayLike, errors_b: ArrayLike) -> Tuple[float, float]:
    """Matched-pairs sentence-segment word error test: ``(z, two-sided p)``.

    With segments = utterances and d_i = errors_a[i] - errors_b[i] (i = 1..n, n >= 2):

        mean  = sum(d_i) / n
        var   = sum((d_i - mean)^2) / (n - 1)
        z     = mean / sqrt(var / n)
        p     = 2 * (1 - Phi(|z|)) = erfc(|z| / sqrt(2))

    z > 0 means A makes more errors than B. If every d_i is the same: z = 0 and p = 1 when
    that value is 0, else z = +-inf and p = 0. sctk cuts sentences further into segments
    bounded by correctly recognised words; taking whole utterances keeps the segments
    independent at the cost of some power.
    """
    a = _as_counts("errors_a", errors_a)
    b = _as_counts("errors_b", errors_b)
    _check_same_length(errors_a=a, errors_b=b)
    if a.size < 2:
        raise ValueError("the matched-pairs test needs at least 2 utterances")
    d = a - b
    mean = float(d.mean())
    var = float(d.var(ddof=1))
    if var == 0.0:
        if mean == 0.0:
            return 0.0, 1.0
        return math.copysign(math.inf, mean), 0.0
    z = mean / math.sqrt(var / d.size)
    return z, math.erfc(abs(z) / math.sqrt(2.0))
