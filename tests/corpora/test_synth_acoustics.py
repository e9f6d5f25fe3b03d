"""Training-split acoustics of the synthesized corpus: simulated rooms, telephone band, wider SNR;
the plain condition (dev, test, seen) unchanged by them."""
import numpy as np

from xasr.corpora.synth import TrainAcoustics, _finish_audio, room_impulse_response, telephone_band


def _tone(seconds=1.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(0)
    return (0.5 * np.sin(2 * np.pi * 150 * t) + 0.3 * np.sin(2 * np.pi * 1000 * t)
            + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def test_room_impulse_response_decays_by_60_db_over_rt60():
    h = room_impulse_response(0.5, np.random.default_rng(1))
    assert h.size == 8000 and h[0] == 1.0 and np.max(np.abs(h)) == 1.0
    e = h[1:] ** 2
    first, last = e[:400].sum(), e[-400:].sum()  # the first and the last 25 ms of the tail
    assert 10 * np.log10(first / last) > 40


def test_telephone_band_removes_low_frequencies():
    x = _tone()
    y = telephone_band(x)
    spec_x, spec_y = np.abs(np.fft.rfft(x)), np.abs(np.fft.rfft(y))
    freqs = np.fft.rfftfreq(x.size, 1 / 16000)
    low, mid = (np.abs(freqs - 150) < 3), (np.abs(freqs - 1000) < 3)
    assert spec_y[low].max() < 0.1 * spec_x[low].max()
    assert spec_y[mid].max() > 0.7 * spec_x[mid].max()


def test_the_plain_condition_is_the_same_with_or_without_train_acoustics():
    x = _tone()
    plain = _finish_audio(x, "u1", 0, 0.6, (20.0, 40.0))
    # acoustics that select nothing leave the audio bit-identical
    none_selected = _finish_audio(x, "u1", 0, 0.6, (20.0, 40.0), TrainAcoustics(reverb_share=0.0, telephone_share=0.0))
    assert np.array_equal(plain, none_selected)
    all_in = TrainAcoustics(snr_db=(5.0, 5.0), reverb_share=1.0, telephone_share=1.0)
    a = _finish_audio(x, "u1", 0, 0.6, (20.0, 40.0), all_in)
    b = _finish_audio(x, "u1", 0, 0.6, (20.0, 40.0), all_in)
    assert np.array_equal(a, b)  # deterministic under the seed and the utterance id
    assert a.shape == plain.shape and not np.allclose(a, plain)
    assert np.max(np.abs(a)) <= 1.0
