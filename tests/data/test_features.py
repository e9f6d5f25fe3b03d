import pytest

from xasr.data.features import FilterConfig, compute_fbank, filter_cuts
from xasr.data.prepare import prepare_manifests


def _cuts(durations_texts):
    from lhotse import CutSet, MonoCut, SupervisionSegment
    from lhotse.testing.dummies import dummy_recording

    cuts = []
    for i, (dur, text) in enumerate(durations_texts):
        rec = dummy_recording(i, duration=dur)
        sup = SupervisionSegment(f"s{i}", rec.id, 0, dur, text=text)
        cuts.append(MonoCut(f"c{i}", 0, dur, 0, recording=rec, supervisions=[sup]))
    return CutSet.from_cuts(cuts)


def test_filter_drops_empty_text_everywhere_and_durations_only_in_training():
    cuts = _cuts([(0.5, "SHORT"), (3.0, "FINE"), (25.0, "LONG"), (3.0, ""), (2.0, "   ")])
    kept, dropped = filter_cuts(cuts, is_train=True, cfg=FilterConfig(1.0, 20.0))
    assert [c.id for c in kept] == ["c1"]
    assert dict(dropped) == {"c0": "too short (0.50 s < 1.0 s)", "c2": "too long (25.00 s > 20.0 s)",
                             "c3": "empty text", "c4": "empty text"}
    kept, dropped = filter_cuts(cuts, is_train=False, cfg=FilterConfig(1.0, 20.0))
    assert [c.id for c in kept] == ["c0", "c1", "c2"]  # test sets are scored whole
    assert [i for i, _ in dropped] == ["c3", "c4"]


@pytest.mark.slow
def test_compute_fbank_stores_80_dim_features_and_reports_drops(tiny_aishell, tmp_path):
    from lhotse import CutSet

    prepare_manifests("aishell", str(tiny_aishell), str(tmp_path / "m"))
    n_train = len(CutSet.from_file(tmp_path / "m/aishell_cuts_train.jsonl.gz"))
    # min_duration above every cut's length except the longest few: drops are listed
    stats = compute_fbank("aishell", str(tmp_path / "m"), str(tmp_path / "f"), ["train", "test"],
                          num_jobs=2, speed_perturb=True, filter_cfg=FilterConfig(min_duration=3.0))
    train = CutSet.from_file(tmp_path / "f/aishell_cuts_train.jsonl.gz")
    dropped = (tmp_path / "f/aishell_dropped_train.tsv").read_text().splitlines()
    assert stats["train"]["dropped"] == len(dropped) > 0
    assert all("too short" in line for line in dropped)
    assert len(train) == 3 * (n_train - len(dropped))  # original + 0.9x + 1.1x
    assert {c.id.endswith("_sp0.9") for c in train} == {True, False}
    cut = next(iter(train))
    feats = cut.load_features()
    assert feats.shape[1] == 80 and abs(feats.shape[0] - cut.duration * 100) <= 2
    test = CutSet.from_file(tmp_path / "f/aishell_cuts_test.jsonl.gz")
    assert len(test) == len(CutSet.from_file(tmp_path / "m/aishell_cuts_test.jsonl.gz"))
    assert stats["test"]["audio_seconds_per_second"] > 0


def test_missing_manifest_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="aishell_cuts_train.jsonl.gz does not exist"):
        compute_fbank("aishell", str(tmp_path), str(tmp_path / "f"), ["train"])


@pytest.mark.slow
def test_cuts_without_features_are_filtered_alike_and_read_as_the_stored_fbank(tiny_aishell, tmp_path):
    import torch
    from lhotse import CutSet

    from xasr.data.dataset import AsrDataset

    prepare_manifests("aishell", str(tiny_aishell), str(tmp_path / "m"))
    cfg = FilterConfig(min_duration=3.0)
    compute_fbank("aishell", str(tmp_path / "m"), str(tmp_path / "f"), ["train"], num_jobs=1,
                  speed_perturb=True, filter_cfg=cfg)
    stats = compute_fbank("aishell", str(tmp_path / "m"), str(tmp_path / "a"), ["train"], num_jobs=1,
                          speed_perturb=True, filter_cfg=cfg, store_features=False)
    stored = CutSet.from_file(tmp_path / "f/aishell_cuts_train.jsonl.gz").to_eager()
    bare = CutSet.from_file(tmp_path / "a/aishell_cuts_train.jsonl.gz").to_eager()
    assert [c.id for c in bare] == [c.id for c in stored] and stats["train"]["cuts"] == len(bare)
    assert not any(c.has_features for c in bare) and not (tmp_path / "a/aishell_feats_train").exists()
    assert (tmp_path / "a/aishell_dropped_train.tsv").read_text() == (tmp_path / "f/aishell_dropped_train.tsv").read_text()
    # a fbank model reading the bare cuts gets the stored features (up to lilcom's rounding),
    # speed-perturbed copies included
    ids = [c.id for c in stored if c.id.endswith("_sp1.1")][:1] + [c.id for c in stored if "_sp" not in c.id][:2]
    ds = AsrDataset(None, "fbank")
    a, b = ds[bare.subset(cut_ids=ids)], ds[stored.subset(cut_ids=ids)]
    assert a.ids == b.ids and torch.equal(a.feat_lens, b.feat_lens) and a.feats.shape[2] == 80
    assert torch.allclose(a.feats, b.feats, atol=0.1)
