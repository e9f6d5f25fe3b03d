import numpy as np
import pytest

from xasr.corpora import tts
from xasr.corpora.tts import TARGET_SAMPLE_RATE, TTSError, Voice, check_engine, synthesize


@pytest.mark.parametrize("voice, text", [
    (Voice("espeak", "cmn-latn-pinyin+f3", rate=1.1, pitch=0.6), "今天天气很好"),
    (Voice("espeak", "en-gb-scotland+m3", rate=0.9, pitch=0.4), "the weather is fine today"),
    (Voice("flite", "slt", rate=1.0, pitch=0.7), "the weather is fine today"),
    (Voice("festival", "kal_diphone", rate=1.0, pitch=0.3), "the weather is fine today"),
])
def test_engines_give_16k_mono_speech(voice, text):
    (audio,) = synthesize(voice, [text])
    assert audio.dtype == np.float32 and audio.ndim == 1
    seconds = audio.size / TARGET_SAMPLE_RATE
    assert 0.7 < seconds < 6.0
    assert np.abs(audio).max() > 0.05  # not silence


def test_rate_changes_duration():
    slow, fast = (synthesize(Voice("espeak", "en-us", rate=r), ["one two three four five six"])[0]
                  for r in (0.8, 1.25))
    assert slow.size > 1.3 * fast.size


def test_festival_batch_keeps_order():
    texts = ["yes", "this is a much longer sentence than the first one"]
    short, long_ = synthesize(Voice("festival", "ked_diphone"), texts)
    assert long_.size > 2 * short.size


def test_missing_engine_names_the_install(monkeypatch):
    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    with pytest.raises(TTSError, match="apt-get install -y flite"):
        check_engine("flite")
    with pytest.raises(TTSError, match="unknown TTS engine"):
        check_engine("nope")
