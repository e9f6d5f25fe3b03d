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


def test_ranks_share_every_global_batch_and_an_empty_share_gets_a_stand_in():
    from xasr.data.dataset import STAND_IN

    cuts = _cuts(7)
    one = [[c.id for c in b] for b in GlobalBatchSampler(cuts, max_duration=9, shuffle=False, num_buckets=2)]
    ranks = [list(GlobalBatchSampler(cuts, max_duration=9, shuffle=False, num_buckets=2, world_size=3, rank=r))
             for r in range(3)]
    assert all(len(r) == len(one) for r in ranks)  # every rank steps through every global batch
    assert any(len(b) < 3 for b in one)  # some global batch has fewer cuts than ranks
    for i, batch in enumerate(one):
        shares = [list(r[i]) for r in ranks]
        real = [c.id for s in shares for c in s if not (c.custom or {}).get(STAND_IN)]
        assert sorted(real) == sorted(batch)  # each cut on exactly one rank
        for s in shares:
            assert len(s) >= 1
            if (s[0].custom or {}).get(STAND_IN):
                assert len(s) == 1 and s[0].id in batch  # a copy of a cut another rank counts
