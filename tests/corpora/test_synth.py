import hashlib
import json
from pathlib import Path

import pytest
import soundfile as sf

from tests.conftest import make_tiny_corpus
from xasr.corpora.synth import SplitSize, SynthConfig, SynthesisError, synthesize_corpus

pytestmark = pytest.mark.slow


def _tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "synthesis.json"}


def _record(root: Path) -> dict:
    return json.loads((root / "synthesis.json").read_text())


def test_aishell_layout_round_trip_through_lhotse(tiny_aishell):
    from lhotse.recipes import prepare_aishell

    rec = _record(tiny_aishell)
    transcript = {}
    for line in (tiny_aishell / "data_aishell/transcript/aishell_transcript_v0.8.txt").read_text().splitlines():
        uid, text = line.split(" ", 1)
        transcript[uid] = text
    manifests = prepare_aishell(tiny_aishell, output_dir=None)
    assert set(manifests) == {"train", "dev", "test"}
    for split, m in manifests.items():
        assert len(m["recordings"]) == len(m["supervisions"]) == rec["summary"]["utterances"][split]
        for sup in m["supervisions"]:
            assert sup.text == transcript[sup.recording_id]
            assert sup.speaker == sup.recording_id[6:11]  # BAC009 S0002 W0001
        for r in m["recordings"]:
            assert r.sampling_rate == 16000 and r.num_channels == 1 and r.duration > 0.5
    wav = next((tiny_aishell / "data_aishell/wav/train").glob("S*/BAC009S*W*.wav"))
    info = sf.info(wav)
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")


def test_librispeech_layout_round_trip_through_lhotse(tiny_librispeech):
    from lhotse.recipes import prepare_librispeech

    rec = _record(tiny_librispeech)
    manifests = prepare_librispeech(tiny_librispeech, dataset_parts="auto", output_dir=None)
    parts = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}
    assert set(manifests) == set(parts.values())
    for split, part in parts.items():
        m = manifests[part]
        assert len(m["supervisions"]) == rec["summary"]["utterances"][split]
        for sup in m["supervisions"]:
            spk, chapter, idx = sup.id.split("-")
            assert sup.speaker == spk and len(idx) == 4
            assert sup.text == sup.text.upper() and sup.text.strip()
    flac = next(tiny_librispeech.glob("train-clean-100/*/*/*.flac"))
    info = sf.info(flac)
    assert (info.format, info.samplerate, info.channels) == ("FLAC", 16000, 1)
    assert (tiny_librispeech / "SPEAKERS.TXT").read_text().startswith(";ID")


@pytest.mark.parametrize("corpus", ["aishell", "librispeech"])
def test_speakers_voices_and_texts_are_disjoint_between_splits(corpus, request):
    root = request.getfixturevalue(f"tiny_{corpus}")
    rec = _record(root)
    by_split = {}
    for s in rec["speakers"]:
        by_split.setdefault(s["split"], []).append(s)
    ids = {k: {s["id"] for s in v} for k, v in by_split.items()}
    timbres = {k: {(s["engine"], s["name"]) for s in v} for k, v in by_split.items()}
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not ids[a] & ids[b]
        assert not timbres[a] & timbres[b], f"{a} and {b} share a voice"
    # no sentence is spoken in two splits
    if corpus == "aishell":
        from lhotse.recipes import prepare_aishell
        m = prepare_aishell(root, output_dir=None)
    else:
        from lhotse.recipes import prepare_librispeech
        m = prepare_librispeech(root, dataset_parts="auto", output_dir=None)
    texts = {k: {s.text for s in v["supervisions"]} for k, v in m.items()}
    names = list(texts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not texts[a] & texts[b]


@pytest.mark.parametrize("corpus", ["aishell", "librispeech"])
def test_same_seed_same_bytes_whatever_the_jobs(corpus, tmp_path, request):
    reference = request.getfixturevalue(f"tiny_{corpus}")  # seed 0, 2 jobs
    again = make_tiny_corpus(corpus, tmp_path / "again", seed=0, jobs=1)
    assert _tree_digest(again) == _tree_digest(reference)
    other = make_tiny_corpus(corpus, tmp_path / "other", seed=1, jobs=2)
    assert _tree_digest(other) != _tree_digest(reference)


def test_hours_are_honoured_roughly(tiny_aishell):
    hours = _record(tiny_aishell)["summary"]["hours"]
    assert 0.015 < hours["train"] < 0.03
    assert hours["dev"] > 0 and hours["test"] > 0


def test_refuses_to_overwrite(tmp_path):
    (tmp_path / "exists").mkdir()
    cfg = SynthConfig(corpus="aishell", out_dir=str(tmp_path / "exists"),
                      sizes={s: SplitSize(0.001, 1) for s in ("train", "dev", "test")})
    with pytest.raises(SynthesisError, match="already exists"):
        synthesize_corpus(cfg)
    assert not any((tmp_path / "exists").iterdir())


def test_rejects_bad_sizes(tmp_path):
    cfg = SynthConfig(corpus="aishell", out_dir=str(tmp_path / "c"),
                      sizes={"train": SplitSize(0.01, 0), "dev": SplitSize(0.01, 1), "test": SplitSize(0.01, 1)})
    with pytest.raises(SynthesisError, match="at least one speaker"):
        synthesize_corpus(cfg)
    assert not (tmp_path / "c").exists()


def test_train_reads_sentences_again_when_it_needs_more_hours_than_the_text_holds():
    from xasr.corpora.synth import plan_corpus
    from xasr.corpora.text_sources import Sentence

    sentences = [Sentence(spoken=t, transcript=t, source="test")
                 for t in ("一二三四五六七八"[i % 8:] + "天地人和春夏秋冬"[: 6 + i % 3] + f"{i:03d}"
                           for i in range(60))]
    sizes = {"train": SplitSize(0.25, 4), "dev": SplitSize(0.01, 2), "test": SplitSize(0.01, 2)}
    speakers, utts = plan_corpus(SynthConfig("aishell", "unused", sizes=sizes), sentences)
    texts = {split: [u.sentence.transcript for u in utts if u.split == split] for split in ("train", "dev", "test")}
    assert texts["dev"] and texts["test"]
    # dev and test never read in train, nor in each other
    assert not set(texts["train"]) & (set(texts["dev"]) | set(texts["test"]))
    assert not set(texts["dev"]) & set(texts["test"])
    # train needed more sentences than were left, so it read every free one at least once, some twice
    free = len(sentences) - len(texts["dev"]) - len(texts["test"])
    assert len(set(texts["train"])) == free
    assert len(texts["train"]) > free
    assert len({u.id for u in utts}) == len(utts)
    # a request beyond ten readings of everything is refused
    sizes["train"] = SplitSize(5.0, 4)
    with pytest.raises(SynthesisError, match="not enough distinct sentences.*train"):
        plan_corpus(SynthConfig("aishell", "unused", sizes=sizes), sentences)
