import logging
import shutil
from pathlib import Path

import pytest

from tests.conftest import copy_corpus
from xasr.data.prepare import CorpusError, check_audio_file, prepare_manifests

pytestmark = pytest.mark.slow


def _count(path: Path) -> int:
    from lhotse import CutSet
    return len(CutSet.from_file(path))


def test_prepare_aishell_writes_validated_cuts(tiny_aishell, tmp_path):
    out = prepare_manifests("aishell", str(tiny_aishell), str(tmp_path / "m"))
    assert set(out) == {"train", "dev", "test"}
    for split, path in out.items():
        assert path.name == f"aishell_cuts_{split}.jsonl.gz"
        assert _count(path) > 0
    assert not list((tmp_path / "m").glob("*partial*"))


def test_prepare_librispeech_writes_one_manifest_per_part(tiny_librispeech, tmp_path):
    out = prepare_manifests("librispeech", str(tiny_librispeech), str(tmp_path / "m"))
    assert set(out) == {"train-clean-100", "dev-clean", "test-clean"}


def test_missing_transcript(tiny_aishell, tmp_path):
    c = copy_corpus(tiny_aishell, tmp_path / "c")
    t = c / "data_aishell/transcript/aishell_transcript_v0.8.txt"
    t.unlink()
    with pytest.raises(CorpusError, match="missing transcript: .*aishell_transcript_v0.8.txt"):
        prepare_manifests("aishell", str(c), str(tmp_path / "m"))


@pytest.mark.parametrize("damage, problem", [
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_bytes(b"this is not audio at all" * 10), "unreadable audio"),
])
def test_bad_wav_is_named(tiny_aishell, tmp_path, damage, problem):
    c = copy_corpus(tiny_aishell, tmp_path / "c")
    bad = sorted((c / "data_aishell/wav/dev").glob("*/*.wav"))[0]
    damage(bad)
    with pytest.raises(CorpusError) as e:
        prepare_manifests("aishell", str(c), str(tmp_path / "m"))
    assert f"{bad}: {problem}" in str(e.value)


def test_wrong_layouts(tiny_aishell, tmp_path):
    with pytest.raises(CorpusError, match="wrong layout: .*data_aishell does not exist"):
        prepare_manifests("aishell", str(tmp_path), str(tmp_path / "m"))
    c = copy_corpus(tiny_aishell, tmp_path / "c")
    shutil.rmtree(c / "data_aishell/wav/test")
    with pytest.raises(CorpusError, match="no wav files in .*wav/test"):
        prepare_manifests("aishell", str(c), str(tmp_path / "m"))
    with pytest.raises(CorpusError, match="no LibriSpeech part"):
        prepare_manifests("librispeech", str(c), str(tmp_path / "m"))
    with pytest.raises(CorpusError, match="does not exist"):
        prepare_manifests("aishell", str(tmp_path / "nowhere"), str(tmp_path / "m"))


def test_wav_without_transcript_line_is_skipped_with_a_warning(tiny_aishell, tmp_path, caplog):
    c = copy_corpus(tiny_aishell, tmp_path / "c")
    t = c / "data_aishell/transcript/aishell_transcript_v0.8.txt"
    lines = t.read_text().splitlines()
    train_ids = [l.split()[0] for l in lines if l.split()[0][6:11] < "S0724"]
    dropped = train_ids[0]
    t.write_text("\n".join(l for l in lines if not l.startswith(dropped)) + "\n")
    with caplog.at_level(logging.WARNING):
        out = prepare_manifests("aishell", str(c), str(tmp_path / "m"))
    assert "1 wav file(s) have no transcript line" in caplog.text
    assert _count(out["train"]) == len(train_ids) - 1


def test_librispeech_missing_trans_txt_and_corrupt_flac(tiny_librispeech, tmp_path, caplog):
    c = copy_corpus(tiny_librispeech, tmp_path / "c")
    trans = sorted(c.glob("train-clean-100/*/*/*.trans.txt"))[0]
    n_lost = len(trans.read_text().splitlines())
    trans.unlink()
    with caplog.at_level(logging.WARNING):
        out = prepare_manifests("librispeech", str(c), str(tmp_path / "m"))
    assert f"missing transcript {trans}" in caplog.text
    full = len(list(tiny_librispeech.glob("train-clean-100/*/*/*.flac")))
    assert _count(out["train-clean-100"]) == full - n_lost
    flac = sorted(c.glob("test-clean/*/*/*.flac"))[0]
    flac.write_bytes(b"fLaC" + b"\0" * 50)
    with pytest.raises(CorpusError, match=f"{flac}: unreadable audio"):
        prepare_manifests("librispeech", str(c), str(tmp_path / "m2"))


def test_failure_keeps_manifests_already_prepared(tiny_aishell, tmp_path):
    out = prepare_manifests("aishell", str(tiny_aishell), str(tmp_path / "m"))
    before = {p: p.read_bytes() for p in out.values()}
    c = copy_corpus(tiny_aishell, tmp_path / "c")
    sorted((c / "data_aishell/wav/train").glob("*/*.wav"))[0].write_bytes(b"")
    with pytest.raises(CorpusError):
        prepare_manifests("aishell", str(c), str(tmp_path / "m"))
    assert {p: p.read_bytes() for p in out.values()} == before


def test_check_audio_file(tmp_path, tiny_aishell):
    import numpy as np
    import soundfile as sf

    good = next(tiny_aishell.glob("data_aishell/wav/train/*/*.wav"))
    assert check_audio_file(good) is None
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert check_audio_file(empty) == "empty file (0 bytes)"
    no_samples = tmp_path / "none.wav"
    sf.write(no_samples, np.zeros(0, np.float32), 16000)
    assert check_audio_file(no_samples) == "audio has no samples"
    assert check_audio_file(tmp_path / "missing.wav").startswith("unreadable audio")
