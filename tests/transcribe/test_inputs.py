"""Listing inputs: files, folders, Kaldi wav.scp lists (paths and pipes), lhotse manifests, arrays."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from xasr.errors import XasrError
from xasr.transcribe.audio import AudioConverter, AudioError
from xasr.transcribe.inputs import list_inputs


def write(path, seconds=0.5, rate=16000, value=0.1):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.full(int(seconds * rate), value, np.float32), rate)
    return path


def test_files_and_folders(tmp_path):
    write(tmp_path / "d/spk1/a.wav")
    write(tmp_path / "d/spk1/b.FLAC")
    write(tmp_path / "d/spk2/deep/c.ogg")
    (tmp_path / "d/spk2/notes.txt").write_text("not audio")
    write(tmp_path / "single file.wav")
    src = list_inputs([tmp_path / "d", str(tmp_path / "single file.wav"), str(tmp_path / "nope.wav")])
    assert [s.id for s in src] == ["spk1/a", "spk1/b", "spk2/deep/c", "single_file", "nope"]
    assert all(s.kind == "file" for s in src)
    assert src[1].path == str(tmp_path / "d/spk1/b.FLAC")
    assert src[0].probe_duration() == pytest.approx(0.5)
    assert src[4].probe_duration() is None  # missing: reported when loaded
    with pytest.raises(AudioError, match="nope.wav: no such file"):
        src[4].load(AudioConverter())
    (tmp_path / "empty").mkdir()
    with pytest.raises(XasrError, match="empty: no audio files below it"):
        list_inputs([tmp_path / "empty"])


def test_repeated_ids_get_a_suffix(tmp_path):
    write(tmp_path / "x/a.wav")
    write(tmp_path / "y/a.wav")
    write(tmp_path / "y/a.flac")
    src = list_inputs([tmp_path / "x/a.wav", tmp_path / "y/a.wav", tmp_path / "y/a.flac"])
    assert [s.id for s in src] == ["a", "a-2", "a-3"]


def test_wav_scp_with_paths_and_commands(tmp_path):
    a = write(tmp_path / "a.wav", value=0.2)
    b = write(tmp_path / "b.flac", rate=8000, value=0.3)
    scp = tmp_path / "wav.scp"
    scp.write_text(f"utt1 {a}\n\nutt2 cat {b} |\nutt3 false |\nutt4 foo.ark:1234\n")
    src = list_inputs([scp])
    assert [(s.id, s.kind) for s in src] == [("utt1", "file"), ("utt2", "command"), ("utt3", "command"),
                                              ("utt4", "file")]
    conv = AudioConverter()
    assert np.allclose(src[0].load(conv), 0.2, atol=1e-4)
    x = src[1].load(conv)  # 8 kHz from the pipe, resampled
    assert len(x) == 8000 and np.allclose(x[2000:6000], 0.3, atol=1e-3)
    with pytest.raises(AudioError, match=r"command 'false \|' failed with exit status 1"):
        src[2].load(conv)
    with pytest.raises(AudioError, match=r"wav\.scp:5: foo\.ark:1234: Kaldi archive offsets are not supported"):
        src[3].load(conv)

    scp.write_text("utt1 a.wav\nutt1 b.wav\n")
    with pytest.raises(XasrError, match=r"wav\.scp:2: id utt1 already on line 1"):
        list_inputs([scp])
    scp.write_text("lonely\n")
    with pytest.raises(XasrError, match=r"wav\.scp:1: expected '<id> <path>'"):
        list_inputs([scp])
    with pytest.raises(XasrError, match="no such list"):
        list_inputs([tmp_path / "other.scp"])


def test_lhotse_cut_and_recording_manifests(tmp_path):
    from lhotse import CutSet, Recording, RecordingSet

    x = np.linspace(-0.5, 0.5, 3 * 8000, dtype=np.float32)
    sf.write(tmp_path / "rec.wav", np.stack([x, -x], axis=1), 8000, subtype="FLOAT")  # stereo, 8 kHz
    rec = Recording.from_file(tmp_path / "rec.wav")
    cuts = CutSet.from_cuts([rec.to_cut().truncate(offset=1.0, duration=1.0).with_id("middle"),
                             rec.to_cut().with_id("whole")])
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    RecordingSet.from_recordings([rec]).to_file(tmp_path / "recs.jsonl.gz")
    src = list_inputs([tmp_path / "cuts.jsonl.gz", tmp_path / "recs.jsonl.gz"])
    assert [s.id for s in src] == ["middle", "whole", "rec"]
    assert [s.duration for s in src] == [1.0, 3.0, 3.0]
    assert src[0].path == str(tmp_path / "rec.wav")
    conv = AudioConverter()
    middle = src[0].load(conv)
    assert len(middle) == 16000 and np.abs(middle).max() < 1e-3  # channels average to 0
    assert len(src[2].load(conv)) == 48000
    with pytest.raises(XasrError, match="no such manifest"):
        list_inputs([tmp_path / "nope.jsonl.gz"])


def test_arrays_and_wrong_types():
    src = list_inputs([(np.zeros(800, np.float32), 8000), (np.zeros((1600, 2), np.int16), 16000)])
    assert [s.id for s in src] == ["array-0", "array-1"]
    assert [s.duration for s in src] == [0.1, 0.1]
    assert len(src[0].load(AudioConverter())) == 1600
    with pytest.raises(XasrError, match="give a path or a"):
        list_inputs([np.zeros(10)])
