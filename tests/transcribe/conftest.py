"""Tiny untrained model directories (built, not trained) and synthetic audio for the
transcription tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TEXT = ["the cat sat on the mat", "hello world", "one two three four five six seven eight nine ten",
        "a quick brown fox jumps over the lazy dog"]

TINY = {"dim": 32, "num_layers": 1, "num_heads": 2, "ff_dim": 64}


def make_units(out_dir: Path) -> Path:
    import sentencepiece as spm

    out_dir.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT * 10), model_prefix=str(out_dir / "unit"), model_type="char",
        character_coverage=1.0, user_defined_symbols=["<blk>", "<sos/eos>"], unk_id=2, bos_id=-1, eos_id=-1,
        minloglevel=2)
    return out_dir / "unit.model"


def make_model_dir(out_dir: Path, units: Path, llm_dir: Path = None, whisper_dir: Path = None, seed: int = 0,
                   ngram: Path = None, unit_classes: Path = None) -> Path:
    """A tiny random XLLMSpeechModel saved as a model directory: a conformer on fbank, or a
    Whisper encoder on whisper_mel; with an LLM when ``llm_dir`` is given, with an n-gram LM
    (an ARPA file) when ``ngram`` is."""
    import sentencepiece as spm
    import torch
    from omegaconf import OmegaConf

    from xasr.config import ExperimentConfig
    from xasr.models.model import XLLMSpeechModel
    from xasr.model_dir import save_model_dir

    cfg = OmegaConf.structured(ExperimentConfig)
    cfg.model.vocab_size = spm.SentencePieceProcessor(model_file=str(units)).get_piece_size()
    if whisper_dir is not None:
        cfg.model.encoder.name = "whisper"
        cfg.model.encoder.whisper.model_dir = str(whisper_dir)
        cfg.data.features = "whisper_mel"
    else:
        cfg.data.features = "fbank"
        for k, v in TINY.items():
            setattr(cfg.model.encoder.conformer, k, v)
        cfg.model.encoder.conformer.conv_kernel = 3
    for k, v in TINY.items():
        setattr(cfg.model.cformer, k, v)
    cfg.model.adapter.hidden_dim = 32
    if llm_dir is not None:
        cfg.model.use_llm = True
        cfg.model.llm.path = str(llm_dir)
    if ngram is not None:
        cfg.model.ngram.path = str(ngram)
    if unit_classes is not None:
        cfg.model.unit_classes = str(unit_classes)
    torch.manual_seed(seed)
    model = XLLMSpeechModel(OmegaConf.to_object(cfg.model))
    return save_model_dir(model.eval(), cfg, str(units), str(out_dir))


@pytest.fixture(scope="session")
def tiny_units(tmp_path_factory) -> Path:
    return make_units(tmp_path_factory.mktemp("units"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_units) -> Path:
    """Conformer on fbank, no LLM: ctc_greedy and cif_greedy work."""
    return make_model_dir(tmp_path_factory.mktemp("tiny_model") / "model", tiny_units)


@pytest.fixture(scope="session")
def tiny_llm_model_dir(tmp_path_factory, tiny_units) -> Path:
    """Conformer on fbank with a tiny LLM: every decoding method works."""
    from tests.models.tiny_llm import make_tiny_llm

    d = tmp_path_factory.mktemp("tiny_llm_model")
    return make_model_dir(d / "model", tiny_units, llm_dir=make_tiny_llm(d / "llm"))


@pytest.fixture(scope="session")
def tiny_whisper_model_dir(tmp_path_factory, tiny_units) -> Path:
    """A tiny random Whisper encoder (30 s of positions) on whisper_mel features, no LLM."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    d = tmp_path_factory.mktemp("tiny_whisper_model")
    torch.manual_seed(0)
    wcfg = WhisperConfig(vocab_size=60, num_mel_bins=80, d_model=32, encoder_layers=1, encoder_attention_heads=2,
                         decoder_layers=1, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                         max_source_positions=1500, max_target_positions=16, pad_token_id=0, bos_token_id=0,
                         eos_token_id=0, decoder_start_token_id=1)
    WhisperForConditionalGeneration(wcfg).save_pretrained(d / "whisper")
    return make_model_dir(d / "model", tiny_units, whisper_dir=d / "whisper")


@pytest.fixture(scope="session")
def tiny_transcriber(tiny_model_dir):
    from xasr.transcribe.api import Transcriber

    return Transcriber.from_pretrained(str(tiny_model_dir), threads=1)


def speechlike(seconds: float, rate: int = 16000, seed: int = 0, level: float = 0.3) -> np.ndarray:
    """Noise amplitude-modulated at syllable rate (4 Hz), never fully silent: VAD sees speech."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    env = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t + seed)
    carrier = rng.standard_normal(n) * 0.5 + np.sin(2 * np.pi * (150 + 20 * seed) * t)
    return (level * env * carrier / 1.2).astype(np.float32)


def with_silences(parts, rate: int = 16000, gap: float = 1.0) -> np.ndarray:
    """Signals joined with ``gap`` seconds of digital silence before, between and after them."""
    z = np.zeros(int(round(gap * rate)), dtype=np.float32)
    out = [z]
    for p in parts:
        out += [p, z]
    return np.concatenate(out)
