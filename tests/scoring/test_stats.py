import math

import numpy as np
import pytest

from xasr.scoring.stats import bootstrap_ci, mapsswe_test, paired_bootstrap_test


def _toy_set(n_utts, seed=1, p=0.1):
    rng = np.random.default_rng(seed)
    lens = rng.integers(5, 20, n_utts)
    return rng.binomial(lens, p), lens


# ----------------------------------------------------------------------------- bootstrap_ci

def test_ci_contains_point_estimate_and_is_deterministic():
    errors, lens = _toy_set(200)
    point = errors.sum() / lens.sum()
    low, high = bootstrap_ci(errors, lens, seed=3)
    assert low < point < high
    assert bootstrap_ci(errors, lens, seed=3) == (low, high)
    assert bootstrap_ci(errors, lens, seed=4) != (low, high)
    assert bootstrap_ci(list(errors), list(lens), seed=3) == (low, high)  # plain lists work too


def test_ci_shrinks_with_more_data():
    errors, lens = _toy_set(100)
    low1, high1 = bootstrap_ci(errors, lens)
    low10, high10 = bootstrap_ci(np.tile(errors, 10), np.tile(lens, 10))  # same rate, 10x utterances
    assert high10 - low10 < 0.5 * (high1 - low1)  # ~ 1/sqrt(10) as wide
    assert low10 < errors.sum() / lens.sum() < high10


def test_ci_is_narrower_at_lower_confidence():
    errors, lens = _toy_set(100)
    low95, high95 = bootstrap_ci(errors, lens, confidence=0.95)
    low50, high50 = bootstrap_ci(errors, lens, confidence=0.5)
    assert low95 <= low50 < high50 <= high95


def test_ci_degenerate_cases_are_exact():
    # every utterance has error rate 1/4: every resample has rate 1/4
    assert bootstrap_ci([1, 2, 3], [4, 8, 12]) == (0.25, 0.25)
    assert bootstrap_ci([1, 2], [3, 6]) == (1 / 3, 1 / 3)
    assert bootstrap_ci([0, 0, 0], [5, 7, 9]) == (0.0, 0.0)
    assert bootstrap_ci([2], [10]) == (0.2, 0.2)  # one utterance


def test_ci_large_input_in_blocks_matches_rate():
    errors, lens = _toy_set(20000, seed=2)
    low, high = bootstrap_ci(errors, lens, n_resamples=300)
    assert low < errors.sum() / lens.sum() < high and high - low < 0.01


def test_ci_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        bootstrap_ci([1, 2], [3])
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([], [])
    with pytest.raises(ValueError, match="non-negative"):
        bootstrap_ci([-1], [3])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1], [3], confidence=95)
    with pytest.raises(ValueError, match="no tokens"):
        bootstrap_ci([0, 1], [0, 0])
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci([1], [3], n_resamples=0)


# ----------------------------------------------------------------------------- paired bootstrap

def test_paired_identical_systems_give_one():
    errors, lens = _toy_set(50)
    # ties count as "B not better": identical systems are never better
    assert paired_bootstrap_test(errors, errors, lens) == 1.0


def test_paired_better_on_every_utterance():
    errors, lens = _toy_set(50)
    a = errors + 1  # A makes one more error than B on every utterance
    assert paired_bootstrap_test(a, errors, lens) < 0.01
    assert paired_bootstrap_test(a, errors, lens) == 0.0
    assert paired_bootstrap_test(errors, a, lens) == 1.0  # the other way round


def test_paired_hand_checkable_two_utterances():
    # d = errors_a - errors_b = [1, -1]; a resample picks each utterance with prob 1/2:
    # sum d = 2 (prob 1/4, B better), 0 (prob 1/2, tie), -2 (prob 1/4) -> p = 3/4
    p = paired_bootstrap_test([1, 0], [0, 1], [1, 1], n_resamples=20000, seed=7)
    assert p == pytest.approx(0.75, abs=0.015)
    assert paired_bootstrap_test([1, 0], [0, 1], [1, 1], n_resamples=20000, seed=7) == p


def test_paired_mostly_better_system():
    errors, lens = _toy_set(300)
    rng = np.random.default_rng(5)
    b = np.maximum(errors - rng.binomial(1, 0.4, errors.size), 0)  # fewer errors on ~40%
    b[:10] += 1  # but a few more here
    assert paired_bootstrap_test(errors, b, lens) < 0.01
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap_test([1, 2], [1, 2], [3])


# ----------------------------------------------------------------------------- MAPSSWE

def test_mapsswe_hand_computed():
    # d = [1, 0, 2, 1]: mean 1, sample variance (0 + 1 + 1 + 0) / 3 = 2/3,
    # z = 1 / sqrt((2/3) / 4) = sqrt(6), p = erfc(sqrt(6) / sqrt(2)) = erfc(sqrt(3)) = 0.014306
    z, p = mapsswe_test([3, 2, 5, 1], [2, 2, 3, 0])
    assert z == pytest.approx(math.sqrt(6))
    assert p == pytest.approx(math.erfc(math.sqrt(3)))
    assert p == pytest.approx(0.0143059, abs=1e-6)
    z2, p2 = mapsswe_test([2, 2, 3, 0], [3, 2, 5, 1])  # swapped: sign flips, p unchanged
    assert z2 == pytest.approx(-math.sqrt(6)) and p2 == pytest.approx(p)


def test_mapsswe_degenerate():
    assert mapsswe_test([1, 2, 3], [1, 2, 3]) == (0.0, 1.0)
    assert mapsswe_test([2, 3, 4], [1, 2, 3]) == (math.inf, 0.0)
    assert mapsswe_test([1, 2, 3], [2, 3, 4]) == (-math.inf, 0.0)
    with pytest.raises(ValueError, match="at least 2"):
        mapsswe_test([1], [0])
