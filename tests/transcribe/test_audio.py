"""Audio loading: formats, rates, channels, piped commands, conversions logged once, bad input."""
from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import soundfile as sf

from xasr.transcribe.audio import (AudioConverter, AudioError, read_audio_bytes, read_audio_command,
                                   read_audio_file)


def sine(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec)) * rate / len(x)


@pytest.mark.parametrize("fmt,subtype,rate,channels", [
    ("WAV", "PCM_16", 8000, 2), ("WAV", "PCM_U8", 11025, 1), ("FLAC", "PCM_24", 44100, 1),
    ("OGG", "VORBIS", 22050, 2), ("WAV", "FLOAT", 48000, 3), ("WAV", "PCM_32", 16000, 1),
])
def test_any_format_rate_and_channel_count_becomes_16k_mono(tmp_path, fmt, subtype, rate, channels):
    x = sine(440.0, 1.5, rate)
    data = np.stack([x] * channels, axis=1)
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, data, rate, format=fmt, subtype=subtype)
    samples, sr = read_audio_file(str(path))
    assert sr == rate and samples.shape[1] == channels
    out = AudioConverter(16000).convert(samples, sr, str(path))
    assert out.ndim == 1 and out.dtype == np.float32
    assert abs(len(out) - 1.5 * 16000) <= 2
    assert abs(peak_hz(out, 16000) - 440.0) < 2.0  # the pitch survives resampling
    rms = float(np.sqrt(np.mean(out[1000:-1000] ** 2)))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.05)  # and the level (tolerance: 8-bit, vorbis)


def test_downmix_is_the_channel_mean():
    left, right = sine(300, 0.5, 16000), sine(500, 0.5, 16000)
    out = AudioConverter().convert(np.stack([left, right], axis=1), 16000, "x")
    np.testing.assert_allclose(out, (left + right) / 2, atol=1e-7)
    # (channels, n) arrays, as lhotse and torchaudio return them, are recognised
    np.testing.assert_allclose(AudioConverter().convert(np.stack([left, right]), 16000, "x"), out, atol=1e-7)
    # integer PCM is scaled to [-1, 1]
    pcm = (left * 32768).astype(np.int16)
    np.testing.assert_allclose(AudioConverter().convert(pcm, 16000, "x"), left, atol=1e-4)


def test_each_conversion_is_logged_once(caplog):
    conv = AudioConverter(16000)
    with caplog.at_level(logging.INFO, logger="xasr.transcribe.audio"):
        for i in range(4):
            conv.convert(np.zeros((800, 2), np.float32) + 0.1, 8000, f"f{i}.wav")
        conv.convert(np.zeros(4410, np.float32), 44100, "g.wav")
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("resampling 8000 Hz" in m for m in msgs) == 1
    assert sum("down-mixing 2-channel" in m for m in msgs) == 1
    assert sum("resampling 44100 Hz" in m for m in msgs) == 1
    assert "f0.wav" in " ".join(msgs)
    assert conv.summary() == ("down-mixed 4 inputs with 2 channels, resampled 1 input from 44100 Hz, "
                              "resampled 4 inputs from 8000 Hz")


def test_bad_files_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(AudioError, match=r"missing\.wav: no such file"):
        read_audio_file(str(tmp_path / "missing.wav"))
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav: the file is empty"):
        read_audio_file(str(tmp_path / "empty.wav"))
    (tmp_path / "notes.wav").write_text("this is not audio\n" * 20)
    with pytest.raises(AudioError, match=r"notes\.wav: not a readable audio file"):
        read_audio_file(str(tmp_path / "notes.wav"))
    sf.write(tmp_path / "header_only.wav", np.zeros(0, np.float32), 16000)
    samples, sr = read_audio_file(str(tmp_path / "header_only.wav"))
    with pytest.raises(AudioError, match=r"header_only\.wav: no samples"):
        AudioConverter().convert(samples, sr, str(tmp_path / "header_only.wav"))
    x = sine(200, 0.2, 16000)
    x[100] = np.nan
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    samples, sr = read_audio_file(str(tmp_path / "nan.wav"))
    with pytest.raises(AudioError, match=r"nan\.wav: 1 NaN or infinite samples"):
        AudioConverter().convert(samples, sr, str(tmp_path / "nan.wav"))
    with pytest.raises(AudioError, match="not a readable audio file"):
        read_audio_bytes(b"RIFF1234WAVEjunk", "bytes")


def test_piped_commands(tmp_path):
    x = sine(440, 0.7, 8000)
    sf.write(tmp_path / "a.flac", x, 8000)
    direct, _ = read_audio_file(str(tmp_path / "a.flac"))
    piped, sr = read_audio_command(f"cat {tmp_path}/a.flac |")  # an audio file on stdout
    assert sr == 8000
    np.testing.assert_array_equal(piped, direct)
    with pytest.raises(AudioError, match=r"command 'exit 3 \|' failed with exit status 3"):
        read_audio_command("exit 3 |")
    with pytest.raises(AudioError, match=r"command 'echo boom >&2; false \|' failed .*: boom"):
        read_audio_command("echo boom >&2; false |")
    with pytest.raises(AudioError, match=r"command 'echo hello \|': not a readable audio file"):
        read_audio_command("echo hello |")
    with pytest.raises(AudioError, match=r"command 'true \|': no audio data"):
        read_audio_command("true |")


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")
def test_sox_pipe_as_in_kaldi_wav_scp(tmp_path):
    x = sine(440, 0.7, 16000)
    sf.write(tmp_path / "a.wav", x, 16000, subtype="PCM_16")
    direct, _ = read_audio_file(str(tmp_path / "a.wav"))
    piped, sr = read_audio_command(f"sox {tmp_path}/a.wav -t wav - |")
    assert sr == 16000
    np.testing.assert_array_equal(piped, direct)
    piped, sr = read_audio_command(f"sox {tmp_path}/a.wav -r 8000 -t wav - |")  # a rate change inside the pipe
    assert sr == 8000 and abs(len(piped) - 5600) <= 1


def test_a_truncated_wav_is_read_as_far_as_it_goes_with_a_warning_naming_what_was_promised(tmp_path):
    from xasr.transcribe.audio import damage_warning

    whole = tmp_path / "whole.wav"
    sf.write(whole, sine(200, 3.0, 16000), 16000, subtype="PCM_16")
    data = whole.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[:44 + 2 * 16000])  # the header and 1.0 s of 16-bit samples
    samples, sr = read_audio_file(str(cut))
    assert len(samples) == 16000 and sr == 16000
    msg = damage_warning(str(cut), len(samples))
    assert msg and "cut.wav: truncated or damaged WAV" in msg and "promises 3.00 s" in msg and "1.00 s were read" in msg
    assert damage_warning(str(whole), 48000) is None
    odd = tmp_path / "odd.wav"  # an odd-sized chunk before the data (padded to an even length)
    sf.write(odd, sine(200, 0.5, 16000), 16000, subtype="PCM_16")
    raw = odd.read_bytes()
    extra = b"LIST" + (3).to_bytes(4, "little") + b"abc\x00"
    odd.write_bytes(raw[:12] + raw[12:36] + extra + raw[36:])
    assert damage_warning(str(odd), 8000) is None
    odd.write_bytes(odd.read_bytes()[:-1000])
    assert "promises 0.50 s" in damage_warning(str(odd), 7500)
    (tmp_path / "not.wav").write_text("hello")
    assert damage_warning(str(tmp_path / "not.wav"), 0) is None


def test_a_truncated_flac_names_what_its_header_promised(tmp_path):
    whole = tmp_path / "whole.flac"
    sf.write(whole, np.random.default_rng(0).normal(0, 0.1, 48000).astype(np.float32), 16000)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 3])
    with pytest.raises(AudioError, match=r"cut\.flac: not a readable audio file .*header promises 3\.00 s"):
        read_audio_file(str(cut))


def _encode_with_av(path, fmt: str, codec: str, x: np.ndarray, rate: int) -> None:
    import av

    with av.open(str(path), "w", format=fmt) as c:
        stream = c.add_stream(codec, rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            c.mux(packet)


@pytest.mark.parametrize("name, fmt, codec, rate", [("a.m4a", "mp4", "aac", 16000),
                                                   ("a.webm", "webm", "libopus", 48000),
                                                   ("a.aac", "adts", "aac", 22050)])
def test_containers_soundfile_cannot_read_are_decoded_with_pyav(tmp_path, name, fmt, codec, rate):
    x = sine(440, 1.0, rate, amp=0.3)
    _encode_with_av(tmp_path / name, fmt, codec, x, rate)
    samples, sr = read_audio_file(str(tmp_path / name))
    assert sr == rate and samples.shape[1] == 1 and abs(len(samples) / sr - 1.0) < 0.1  # codec priming/padding
    assert abs(peak_hz(samples[:, 0], sr) - 440) < 5 and 0.2 < np.abs(samples).max() < 0.4
    mono16k = AudioConverter().convert(samples, sr, name)
    assert abs(len(mono16k) / 16000 - len(samples) / sr) < 1e-3
    piped, sr2 = read_audio_command(f"cat {tmp_path / name} |")  # bytes on stdout go the same way
    assert sr2 == sr and len(piped) == len(samples)
