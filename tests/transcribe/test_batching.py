"""Features exactly as training computes them, padded batches, duration-sorted batching."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.transcribe.conftest import speechlike
from xasr.data.dataset import pad_features
from xasr.transcribe.batching import feature_function, list_batches, make_batch


def _cuts_with_text(tmp_path, signals):
    from lhotse import CutSet, Recording, SupervisionSegment

    cuts = []
    for i, x in enumerate(signals):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, x, 16000, subtype="PCM_16")
        rec = Recording.from_file(path, recording_id=f"u{i}")
        cut = rec.to_cut()
        cut.supervisions = [SupervisionSegment(id=f"u{i}", recording_id=f"u{i}", start=0, duration=rec.duration,
                                               text="a b")]
        cuts.append(cut)
    return CutSet.from_cuts(cuts)


def test_fbank_equals_the_stored_training_features(tmp_path):
    from lhotse import CutSet

    from xasr.data.features import compute_fbank

    signals = [speechlike(1.37, seed=1), speechlike(2.0, seed=2)]
    (tmp_path / "m").mkdir()
    _cuts_with_text(tmp_path, signals).to_file(tmp_path / "m/tiny_cuts_test.jsonl.gz")
    compute_fbank("tiny", str(tmp_path / "m"), str(tmp_path / "f"), ["test"], num_jobs=1)
    stored = {c.id: c.load_features() for c in CutSet.from_file(tmp_path / "f/tiny_cuts_test.jsonl.gz")}
    fbank = feature_function("fbank", 80)
    for i, c_id in enumerate(sorted(stored)):
        audio, _ = sf.read(tmp_path / f"u{i}.wav", dtype="float32")
        ours = fbank(audio).numpy()
        assert ours.shape == stored[c_id].shape
        np.testing.assert_allclose(ours, stored[c_id], atol=0.02)  # lilcom storage: 2^-6 steps
    # a decoding batch is padded as a training batch of the stored features (not with zeros)
    from xasr.data.dataset import AsrDataset

    trained = AsrDataset(None, "fbank")[CutSet.from_file(tmp_path / "f/tiny_cuts_test.jsonl.gz")]  # longest first
    ours = make_batch(["u1", "u0"], [fbank(sf.read(tmp_path / f"u{i}.wav", dtype="float32")[0]) for i in (1, 0)],
                      [2.0, 1.37], "fbank")
    assert torch.equal(trained.feat_lens, ours.feat_lens)
    n = int(ours.feat_lens[1])
    assert torch.equal(ours.feats[1, n:], trained.feats[1, n:]) and float(ours.feats[1, n:].max()) < -20
    torch.testing.assert_close(ours.feats, trained.feats, atol=0.02, rtol=0)


def test_whisper_mel_equals_the_training_dataset(tmp_path):
    from xasr.data.dataset import AsrDataset

    signals = [speechlike(2.3, seed=3), speechlike(1.0, seed=4)]
    cuts = _cuts_with_text(tmp_path, signals)
    batch = AsrDataset(None, "whisper_mel")[cuts]  # longest first
    mel = feature_function("whisper_mel", 80)
    feats = [mel(sf.read(tmp_path / f"u{i}.wav", dtype="float32")[0]) for i in (0, 1)]
    ours = make_batch(["u0", "u1"], feats, [2.3, 1.0], "whisper_mel")
    assert batch.ids == ours.ids
    assert torch.equal(batch.feat_lens, ours.feat_lens)
    assert torch.equal(batch.feats, ours.feats)
    assert ours.texts == ["", ""] and ours.durations.tolist() == pytest.approx([2.3, 1.0])


def test_pad_features():
    a, b = torch.ones(3, 2), torch.full((5, 2), 2.0)
    feats, lens = pad_features([a, b])
    assert feats.shape == (2, 5, 2) and lens.tolist() == [3, 5]
    assert torch.equal(feats[0, :3], a) and float(feats[0, 3:].abs().sum()) == 0.0
    with pytest.raises(ValueError):
        pad_features([])


def test_batches_are_sorted_by_duration_and_bounded():
    durs = [3.0, 10.0, 1.0, 7.0, 25.0, 2.0, 4.0]
    batches = list_batches(durs, 12.0)
    order = [i for b in batches for i in b]
    assert sorted(order) == list(range(len(durs)))  # every item exactly once
    assert [durs[i] for i in order] == sorted(durs, reverse=True)
    assert batches[0] == [4]  # longer than the limit: alone
    assert all(sum(durs[i] for i in b) <= 12.0 for b in batches[1:])
