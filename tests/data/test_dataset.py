"""Batches from the sampler: a set of one cut (lhotse's bucketing needs two) still decodes."""
from lhotse import CutSet
from lhotse.testing.dummies import dummy_cut

from xasr.data.dataset import GlobalBatchSampler


def _cuts(n):
    return CutSet.from_cuts(dummy_cut(i, duration=1.0 + i) for i in range(n))


def test_one_cut_makes_one_batch():
    s = GlobalBatchSampler(_cuts(1), max_duration=30, shuffle=False, num_buckets=8)
    assert [[c.id for c in b] for b in s] == [["dummy-mono-cut-0000"]]


def test_every_cut_once_in_duration_order():
    s = GlobalBatchSampler(_cuts(6), max_duration=7, shuffle=False, num_buckets=2)
    batches = [[c.id for c in b] for b in s]
    assert sorted(i for b in batches for i in b) == sorted(c.id for c in _cuts(6))
