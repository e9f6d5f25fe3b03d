"""Variable-length Whisper encoder and Whisper log-mel features: a tiny random Whisper for the
unit tests; (slow) the installed whisper-base checked against faster-whisper / CTranslate2."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from xasr.errors import XasrError
from xasr.models.encoder_registry import ENCODERS
from xasr.data.whisper_mel import whisper_log_mel
from xasr.models.whisper_encoder import WhisperEncoderConfig, WhisperSpeechEncoder

MAX_POS = 40  # tiny model: 80 input frames at most


@pytest.fixture(scope="module")
def tiny_whisper_dir(tmp_path_factory) -> Path:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=60, num_mel_bins=80, d_model=32, encoder_layers=3, encoder_attention_heads=4,
                        decoder_layers=1, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                        max_source_positions=MAX_POS, max_target_positions=16, pad_token_id=0, bos_token_id=0,
                        eos_token_id=0, decoder_start_token_id=1)
    model = WhisperForConditionalGeneration(cfg)
    with torch.no_grad():  # give the positions a real scale (they start near zero)
        model.model.encoder.embed_positions.weight.normal_(0, 0.5)
    out = tmp_path_factory.mktemp("tiny_whisper")
    model.save_pretrained(out)
    return out


def stock_encoder(model_dir: Path, max_source_positions: int):
    """transformers' own WhisperEncoder with its positions cut to ``max_source_positions``."""
    from transformers import WhisperConfig, WhisperModel
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    full = WhisperModel.from_pretrained(model_dir).encoder
    cfg = WhisperConfig.from_pretrained(model_dir)
    cfg.max_source_positions = max_source_positions
    enc = WhisperEncoder(cfg).eval()
    state = full.state_dict()
    state["embed_positions.weight"] = state["embed_positions.weight"][:max_source_positions]
    enc.load_state_dict(state)
    return enc


def test_registered():
    assert ENCODERS.get("whisper") is WhisperSpeechEncoder
    assert WhisperSpeechEncoder.config_class is WhisperEncoderConfig


def test_log_mel_matches_whisper_feature_extractor():
    from transformers import WhisperFeatureExtractor

    rng = np.random.default_rng(0)
    t = np.arange(int(1.37 * 16000)) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    ref = WhisperFeatureExtractor(feature_size=80)(audio, sampling_rate=16000, return_tensors="np").input_features[0]
    mine = whisper_log_mel(audio)
    n = audio.size // 160
    assert mine.shape == (n, 80)
    # all frames but the last see the same samples as in the 30-s padded version
    assert np.abs(ref[:, : n - 1].T - mine[: n - 1].numpy()).max() < 1e-4
    assert torch.allclose(whisper_log_mel(torch.from_numpy(audio)), mine)
    with pytest.raises(XasrError, match="16000"):
        whisper_log_mel(audio, sample_rate=8000)


def test_batch_equals_single(tiny_whisper_dir):
    enc = WhisperSpeechEncoder(WhisperEncoderConfig(str(tiny_whisper_dir)))
    assert enc.output_dim == 32
    torch.manual_seed(1)
    lens = [64, 37, 20]
    feats = torch.zeros(3, 64, 80)
    items = [torch.randn(n, 80) for n in lens]
    for i, x in enumerate(items):
        feats[i, : lens[i]] = x
    feats[1, 37:] = 5.0  # garbage in the padding must not matter
    with torch.no_grad():
        h, h_lens = enc(feats, torch.tensor(lens))
        assert h.shape == (3, 32, 32) and h_lens.tolist() == [32, 18, 10]
        for i, x in enumerate(items):
            hi, hl = enc(x[None], torch.tensor([lens[i]]))
            assert hi.shape == (1, lens[i] // 2, 32) and hl.item() == lens[i] // 2
            assert (h[i, : lens[i] // 2] - hi[0]).abs().max() < 1e-4
            assert torch.all(h[i, lens[i] // 2:] == 0)


def test_matches_stock_encoder(tiny_whisper_dir):
    enc = WhisperSpeechEncoder(WhisperEncoderConfig(str(tiny_whisper_dir)))
    torch.manual_seed(2)
    with torch.no_grad():
        # full length: the stock encoder unchanged
        x = torch.randn(2, 2 * MAX_POS, 80)
        ref = stock_encoder(tiny_whisper_dir, MAX_POS)(x.transpose(1, 2)).last_hidden_state
        h, _ = enc(x, torch.tensor([2 * MAX_POS] * 2))
        assert (h - ref).abs().max() < 1e-5
        # shorter input: the stock encoder rebuilt with max_source_positions = T // 2
        x = torch.randn(1, 26, 80)
        ref = stock_encoder(tiny_whisper_dir, 13)(x.transpose(1, 2)).last_hidden_state
        h, _ = enc(x, torch.tensor([26]))
        assert (h - ref).abs().max() < 1e-5
        # ... which is not the 30-s (here: MAX_POS) padded output on the valid frames: padding is attended to
        padded = torch.nn.functional.pad(x, (0, 0, 0, 2 * MAX_POS - 26))
        ref_padded = stock_encoder(tiny_whisper_dir, MAX_POS)(padded.transpose(1, 2)).last_hidden_state
        assert (h[0] - ref_padded[0, :13]).abs().max() > 1e-3


def test_num_layers_freeze_and_errors(tiny_whisper_dir):
    enc = WhisperSpeechEncoder(WhisperEncoderConfig(str(tiny_whisper_dir), num_layers=2))
    assert len(enc.encoder.layers) == 2
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.encoder.training
    with pytest.raises(XasrError, match="exceed"):
        enc(torch.zeros(1, 2 * MAX_POS + 2, 80), torch.tensor([2 * MAX_POS + 2]))
    with pytest.raises(XasrError, match="feats"):
        enc(torch.zeros(1, 10, 40), torch.tensor([10]))
    with pytest.raises(XasrError, match="num_layers"):
        WhisperSpeechEncoder(WhisperEncoderConfig(str(tiny_whisper_dir), num_layers=9))
    trainable = WhisperSpeechEncoder(WhisperEncoderConfig(str(tiny_whisper_dir), freeze=False)).train()
    h, _ = trainable(torch.randn(2, 30, 80), torch.tensor([30, 22]))
    h.sum().backward()
    assert trainable.encoder.conv1.weight.grad is not None


def test_missing_model_dir(tmp_path):
    from xasr.pretrained.errors import ModelInstallError

    with pytest.raises(ModelInstallError, match="xasr models install"):
        WhisperSpeechEncoder(WhisperEncoderConfig(str(tmp_path / "no_such_model")))


# ---------------------------------------------------------------------------------------------
# The real whisper-base against faster-whisper's CTranslate2 engine
# ---------------------------------------------------------------------------------------------

def speech_clip(tmp_path: Path) -> np.ndarray:
    import soundfile as sf
    from scipy.signal import resample_poly

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    wav = tmp_path / "clip.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav),
                    "The quick brown fox jumps over the lazy dog. Speech recognition with large language models."],
                   check=True)
    audio, sr = sf.read(wav, dtype="float32")
    from math import gcd

    g = gcd(16000, sr)
    return resample_poly(audio, 16000 // g, sr // g).astype(np.float32)


@pytest.mark.slow
def test_whisper_base_matches_faster_whisper(tmp_path):
    import ctranslate2
    from faster_whisper.feature_extractor import FeatureExtractor
    from transformers import WhisperForConditionalGeneration

    from xasr.pretrained.install import install_model

    model_dir = install_model("whisper-base")
    audio = speech_clip(tmp_path)
    n = audio.size // 160
    feats30 = FeatureExtractor(feature_size=80)(audio, padding=480000 - audio.size)[:, :3000]  # (80, 3000)
    # our features equal faster-whisper's on the valid frames
    assert np.abs(whisper_log_mel(audio)[: n - 1].numpy() - feats30[:, : n - 1].T).max() < 1e-3

    ct2 = ctranslate2.models.Whisper(str(model_dir / "ct2"), device="cpu", compute_type="float32")
    x = ctranslate2.StorageView.from_array(np.ascontiguousarray(feats30[None]))
    ct2_out = np.array(ct2.encode(x, to_cpu=True))  # (1, 1500, 512)

    enc = WhisperSpeechEncoder(WhisperEncoderConfig(str(model_dir)))
    with torch.no_grad():
        h, _ = enc(torch.from_numpy(feats30.T.copy())[None], torch.tensor([3000]))
    diff = float(np.abs(h[0].numpy() - ct2_out[0]).max())
    print(f"max |converted encoder - CTranslate2 encoder| = {diff:.3g} (max |h| = {float(h.abs().max()):.3g})")
    assert diff < 5e-3

    # the converted decoder: greedy tokens equal CTranslate2's greedy decoding
    prompt = [50258, 50259, 50359, 50363]  # <|startoftranscript|><|en|><|transcribe|><|notimestamps|>
    ct2_ids = ct2.generate(x, [prompt], beam_size=1, max_length=40, suppress_blank=False,
                           suppress_tokens=[]).pop().sequences_ids[0]
    model = WhisperForConditionalGeneration.from_pretrained(model_dir).eval()
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(40):
            nxt = int(model(encoder_outputs=(h,), decoder_input_ids=ids).logits[0, -1].argmax())
            if nxt == model.config.eos_token_id:
                break
            ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
    assert ids[0, len(prompt):].tolist() == ct2_ids
    # and the directory works with transformers' own generate() (language detected, task from the config)
    with torch.no_grad():
        generated = model.generate(torch.from_numpy(feats30)[None], max_new_tokens=40)
    assert generated[0].tolist()[-len(ct2_ids):] == ct2_ids
    from transformers import AutoTokenizer

    text = AutoTokenizer.from_pretrained(model_dir).decode(ct2_ids).lower()
    assert "lazy dog" in text


@pytest.mark.slow
def test_whisper_base_variable_length_batch(tmp_path):
    from xasr.pretrained.install import install_model

    model_dir = install_model("whisper-base")
    audio = speech_clip(tmp_path)
    a = whisper_log_mel(audio)  # (n, 80)
    b = whisper_log_mel(audio[: 16000 * 2 + 480])  # 2.03 s: an odd frame count
    feats = torch.zeros(2, a.shape[0], 80)
    feats[0], feats[1, : b.shape[0]] = a, b
    enc = WhisperSpeechEncoder(WhisperEncoderConfig(str(model_dir)))
    with torch.no_grad():
        h, h_lens = enc(feats, torch.tensor([a.shape[0], b.shape[0]]))
        ha, _ = enc(a[None], torch.tensor([a.shape[0]]))
        hb, _ = enc(b[None], torch.tensor([b.shape[0]]))
    assert h_lens.tolist() == [a.shape[0] // 2, b.shape[0] // 2]
    assert (h[0] - ha[0]).abs().max() < 1e-4
    assert (h[1, : hb.shape[1]] - hb[0]).abs().max() < 1e-4


def test_the_encoder_interface_the_model_and_the_cache_use(tiny_whisper_dir):
    """A frozen pretrained encoder names its weights, is frozen, and is rebuilt from its cache identity."""
    cfg = WhisperEncoderConfig(str(tiny_whisper_dir))
    enc = WhisperSpeechEncoder(cfg).eval()
    assert enc.pretrained_dir == tiny_whisper_dir and enc.frozen and cfg.model_dir == str(tiny_whisper_dir)
    ident = WhisperSpeechEncoder.cache_identity(cfg)
    assert ident["encoder"] == "whisper" and ident["path"] == str(tiny_whisper_dir) and ident["fingerprint"]
    again = WhisperSpeechEncoder.from_identity(ident).eval()
    x, lens = torch.randn(2, 40, 80), torch.tensor([40, 30])
    assert torch.equal(enc(x, lens)[0], again(x, lens)[0])
    with pytest.raises(XasrError, match="freeze is false"):
        WhisperSpeechEncoder.cache_identity(WhisperEncoderConfig(str(tiny_whisper_dir), freeze=False))


def test_a_trained_top_starts_as_the_frozen_encoder_and_is_all_that_trains(tiny_whisper_dir):
    frozen = WhisperSpeechEncoder(WhisperEncoderConfig(str(tiny_whisper_dir))).eval()
    top = WhisperSpeechEncoder(WhisperEncoderConfig(str(tiny_whisper_dir), train_top=1))
    torch.manual_seed(3)
    x, lens = torch.randn(2, 40, 80), torch.tensor([40, 26])
    with torch.no_grad():
        mid, mid_lens = top.forward_frozen(x, lens)  # what the cache stores: 2 of 3 layers, no final norm
        assert mid.shape == (2, 20, 32) and torch.all(mid[1, 13:] == 0)
        assert (top.eval()(x, lens)[0] - frozen(x, lens)[0]).abs().max() < 1e-5  # the same encoder at first
        assert (top.forward_trained(mid, mid_lens)[0] - frozen(x, lens)[0]).abs().max() < 1e-5
        assert frozen.forward_trained(*frozen.forward_frozen(x, lens))[0].equal(frozen(x, lens)[0])
    # only the top layer and the final norm train; the rest stays Whisper's (never saved)
    trained = {n for n, p in top.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith(("encoder.layers.2.", "encoder.layer_norm.")) for n in trained)
    assert set(top.pretrained_param_names()) == {n for n, _ in top.named_parameters()} - trained
    assert set(frozen.pretrained_param_names()) == {n for n, _ in frozen.named_parameters()}
    top.train()
    assert top.encoder.layers[2].training and not top.encoder.layers[0].training and not top.encoder.conv1.training
    h, _ = top.forward_trained(mid, mid_lens)
    h.sum().backward()
    assert top.encoder.layers[2].fc1.weight.grad is not None and top.encoder.layers[1].fc1.weight.grad is None
    # the cache identity names the split: a cache of the full encoder does not serve it
    ident = WhisperSpeechEncoder.cache_identity(top.cfg)
    assert ident["train_top"] == 1 and WhisperSpeechEncoder.cache_identity(frozen.cfg)["train_top"] == 0
    again = WhisperSpeechEncoder.from_identity(ident).eval()
    with torch.no_grad():
        assert again.forward_frozen(x, lens)[0].equal(mid)
    with pytest.raises(XasrError, match="train_top=4"):
        WhisperSpeechEncoder(WhisperEncoderConfig(str(tiny_whisper_dir), train_top=4))
    with pytest.raises(XasrError, match="train_top needs freeze: true"):
        WhisperSpeechEncoder(WhisperEncoderConfig(str(tiny_whisper_dir), freeze=False, train_top=1))


def test_several_layers_read_side_by_side(tiny_whisper_dir):
    """output_layers=N: the top N kept layers, each through the final norm, concatenated; the
    top block is the single-layer encoder's output, the one below it the encoder cut one layer
    shorter, and the cache identity tells the two apart."""
    torch.manual_seed(4)
    x, lens = torch.randn(2, 40, 80), torch.tensor([40, 26])
    two = WhisperSpeechEncoder(WhisperEncoderConfig(str(tiny_whisper_dir), output_layers=2)).eval()
    assert two.output_dim == 2 * 32
    with torch.no_grad():
        h, h_lens = two(x, lens)
        top = WhisperSpeechEncoder(WhisperEncoderConfig(str(tiny_whisper_dir))).eval()(x, lens)[0]
        below = WhisperSpeechEncoder(WhisperEncoderConfig(str(tiny_whisper_dir), num_layers=2)).eval()(x, lens)[0]
    assert h.shape == (2, 20, 64) and h_lens.tolist() == [20, 13]
    assert (h[..., 32:] - top).abs().max() < 1e-5 and (h[..., :32] - below).abs().max() < 1e-5
    assert torch.all(h[1, 13:] == 0)
    ident = WhisperSpeechEncoder.cache_identity(two.cfg)
    assert ident["output_layers"] == 2
    assert WhisperSpeechEncoder.cache_identity(WhisperEncoderConfig(str(tiny_whisper_dir)))["output_layers"] == 1
    with torch.no_grad():
        assert WhisperSpeechEncoder.from_identity(ident).eval()(x, lens)[0].equal(h)
    with pytest.raises(XasrError, match="output_layers=4"):
        WhisperSpeechEncoder(WhisperEncoderConfig(str(tiny_whisper_dir), output_layers=4))
    with pytest.raises(XasrError, match="not both"):
        WhisperSpeechEncoder(WhisperEncoderConfig(str(tiny_whisper_dir), output_layers=2, train_top=1))
