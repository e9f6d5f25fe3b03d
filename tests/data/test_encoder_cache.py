"""Stored outputs of a frozen encoder: the same numbers as running it, the same losses, reruns
skip finished manifests, and a cache made by another encoder is refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from xasr.errors import XasrError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tiny_aishell, tmp_path_factory):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from xasr.config import load_experiment
    from xasr.data.prepare import prepare_manifests
    from xasr.data.units import train_units

    d = tmp_path_factory.mktemp("cache")
    torch.manual_seed(0)
    wcfg = WhisperConfig(vocab_size=60, num_mel_bins=80, d_model=32, encoder_layers=2, encoder_attention_heads=4,
                         decoder_layers=1, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                         max_source_positions=1500, max_target_positions=16, pad_token_id=0, bos_token_id=0,
                         eos_token_id=0, decoder_start_token_id=1)
    WhisperForConditionalGeneration(wcfg).save_pretrained(d / "whisper")
    prepare_manifests("aishell", str(tiny_aishell), str(d / "m"))
    train_units([str(d / "m/aishell_cuts_train.jsonl.gz")], str(d / "lang"), "char")

    def cfg(*extra):
        return load_experiment([
            "model.encoder.name=whisper", f"model.encoder.whisper.model_dir={d / 'whisper'}",
            "data.features=whisper_mel", f"data.train_cuts=[{d}/m/aishell_cuts_train.jsonl.gz]",
            f"data.valid_cuts=[{d}/m/aishell_cuts_dev.jsonl.gz]", f"data.units={d}/lang/unit.model",
            "data.max_duration=30", "model.cformer.dim=32", "model.cformer.num_layers=1",
            "model.cformer.num_heads=2", "model.cformer.ff_dim=64", "model.cformer.dropout=0",
            "model.cformer.cif.dropout=0", "train.trainable=[ctc,cformer]", "train.tensorboard=false",
            "train.num_threads=1", "train.log_interval=1", *extra])

    return d, cfg


def test_cached_outputs_equal_the_encoder(setup):
    from lhotse import CutSet

    from xasr.data.dataset import ENCODED_FIELD
    from xasr.data.encoder_cache import cache_encoder_outputs
    from xasr.data.whisper_mel import whisper_log_mel
    from xasr.models.whisper_encoder import WhisperEncoderConfig, WhisperSpeechEncoder

    d, cfg = setup
    out = d / "enc"
    paths = cache_encoder_outputs(cfg(), [f"{d}/m/aishell_cuts_train.jsonl.gz", f"{d}/m/aishell_cuts_dev.jsonl.gz"],
                                  str(out), max_duration=20)
    assert [Path(p).name for p in paths] == ["aishell_cuts_train.jsonl.gz", "aishell_cuts_dev.jsonl.gz"]
    meta = json.loads((out / "cache.json").read_text())
    assert meta["features"] == "whisper_mel" and meta["num_layers"] is None and len(meta["fingerprint"]) == 64

    enc = WhisperSpeechEncoder(WhisperEncoderConfig(str(d / "whisper"))).eval()
    cached = CutSet.from_file(paths[1])
    original = CutSet.from_file(f"{d}/m/aishell_cuts_dev.jsonl.gz")
    assert sorted(c.id for c in cached) == sorted(c.id for c in original)
    for c in cached:
        stored = torch.from_numpy(c.load_custom(ENCODED_FIELD)).float()  # (T', D)
        mel = whisper_log_mel(c.load_audio()[0], c.sampling_rate)[None]  # (1, T, 80)
        with torch.no_grad():
            h, h_lens = enc(mel, torch.tensor([mel.shape[1]]))
        assert stored.shape == (int(h_lens[0]), 32)
        torch.testing.assert_close(stored, h[0], atol=2e-2, rtol=1e-2)  # float16 storage

    # a rerun skips what is done, also in a cache written before cache.json named the trained top
    mtime = Path(paths[0]).stat().st_mtime_ns
    old = {k: v for k, v in meta.items() if k != "train_top"}
    (out / "cache.json").write_text(json.dumps(old))
    cache_encoder_outputs(cfg(), [f"{d}/m/aishell_cuts_train.jsonl.gz"], str(out))
    assert Path(paths[0]).stat().st_mtime_ns == mtime


def test_losses_from_the_cache_match_the_live_encoder(setup):
    from lhotse import CutSet
    from omegaconf import OmegaConf

    from xasr.data.dataset import AsrDataset
    from xasr.data.encoder_cache import cache_encoder_outputs
    from xasr.models.model import XLLMSpeechModel

    d, cfg = setup
    c = cfg()
    path = cache_encoder_outputs(c, [f"{d}/m/aishell_cuts_dev.jsonl.gz"], str(d / "enc2"))[0]
    import sentencepiece as spm
    c.model.vocab_size = spm.SentencePieceProcessor(model_file=c.data.units).get_piece_size()
    torch.manual_seed(0)
    model = XLLMSpeechModel(OmegaConf.to_object(c.model)).eval()
    cached = CutSet.from_file(path)
    live = AsrDataset(c.data.units, "whisper_mel")[CutSet.from_file(f"{d}/m/aishell_cuts_dev.jsonl.gz")]
    stored = AsrDataset(c.data.units, "whisper_mel", encoded=True)[cached]
    assert stored.encoded and not live.encoded and stored.ids == live.ids
    with torch.no_grad():
        a, b = model(live, stage=1), model(stored, stage=1)
    for k in ("ctc", "ce", "quantity"):
        torch.testing.assert_close(a[k], b[k], atol=1e-2, rtol=1e-2)
    # float16 storage moves the CTC posteriors a little: an untrained model has near ties, so the
    # best unit must agree wherever the live margin is clear of that noise
    with torch.no_grad():
        (h1, n1), (h2, n2) = model.encode_batch(live), model.encode_batch(stored)
        p1, p2 = model.ctc(h1).log_softmax(-1), model.ctc(h2).log_softmax(-1)
    assert torch.equal(n1, n2)
    valid = torch.arange(p1.shape[1])[None] < n1[:, None]
    top2 = p1.topk(2, dim=-1).values
    clear = valid & (top2[..., 0] - top2[..., 1] > 0.05)
    assert clear.float().sum() > 0.5 * valid.float().sum()
    assert torch.equal(p1.argmax(-1)[clear], p2.argmax(-1)[clear])


def test_training_reads_the_cache_and_refuses_another_encoder(setup, tmp_path):
    from xasr.data.encoder_cache import cache_encoder_outputs
    from xasr.trainer import train

    d, cfg = setup
    cache = d / "enc3"
    cache_encoder_outputs(cfg(), [f"{d}/m/aishell_cuts_train.jsonl.gz", f"{d}/m/aishell_cuts_dev.jsonl.gz"],
                          str(cache))
    model_dir = train(cfg(f"data.encoder_cache={cache}", f"train.exp_dir={tmp_path / 'exp'}", "train.max_steps=2"))
    assert (model_dir / "model.safetensors").is_file()
    assert "reading stored encoder outputs" in (tmp_path / "exp/train.log").read_text()

    with pytest.raises(XasrError, match="num_layers"):
        train(cfg(f"data.encoder_cache={cache}", f"train.exp_dir={tmp_path / 'exp2'}",
                  "model.encoder.whisper.num_layers=1"))
    with pytest.raises(XasrError, match="cache.json is missing"):
        train(cfg(f"data.encoder_cache={tmp_path}", f"train.exp_dir={tmp_path / 'exp3'}"))
    with pytest.raises(XasrError, match="only a frozen pretrained encoder"):
        cache_encoder_outputs(cfg("model.encoder.name=conformer"), [], str(tmp_path / "x"))


def test_frozen_encoder_outputs_are_masked_in_training_only(setup):
    from lhotse import CutSet
    from omegaconf import OmegaConf

    from xasr.data.dataset import AsrDataset
    from xasr.data.encoder_cache import cache_encoder_outputs
    from xasr.models.model import XLLMSpeechModel

    d, cfg = setup
    c = cfg("model.frozen_time_masks=2", "model.frozen_time_mask_ratio=0.2", "model.frozen_dim_masks=1",
            "model.frozen_dim_mask_width=8")
    path = cache_encoder_outputs(c, [f"{d}/m/aishell_cuts_dev.jsonl.gz"], str(d / "enc4"))[0]
    c.model.vocab_size = 50
    model = XLLMSpeechModel(OmegaConf.to_object(c.model))
    batch = AsrDataset(None, "whisper_mel", encoded=True)[CutSet.from_file(path)]
    model.eval()
    h, _ = model.encode_batch(batch)
    assert torch.equal(h, batch.feats)  # decoding sees the encoder output as it is
    model.train()
    torch.manual_seed(1)
    h, lens = model.encode_batch(batch)
    zero = (h == 0) & (batch.feats != 0)
    assert zero.any()
    assert torch.equal(h[~zero], batch.feats[~zero])  # masking only zeroes values
    for b in range(h.shape[0]):  # at most 2 spans of 20% of the frames are fully zeroed
        frames = zero[b, :int(lens[b])].all(dim=1).sum().item()
        assert frames <= 2 * int(0.2 * int(lens[b]))


def test_the_encoder_top_trains_on_stored_outputs_of_the_layers_below(setup, tmp_path):
    """train_top: the cache stores the frozen layers' output; training adapts the top layer from
    Whisper's weights at optim.encoder_lr_scale x lr; the model directory keeps the adapted layer
    only, and decodes live audio as it decodes the stored outputs."""
    from lhotse import CutSet
    from safetensors.torch import load_file

    from xasr.data.dataset import AsrDataset
    from xasr.data.encoder_cache import cache_encoder_outputs
    from xasr.model_dir import load_model_dir
    from xasr.trainer import Trainer

    d, cfg = setup
    top = ("model.encoder.whisper.train_top=1", "train.trainable=[encoder,ctc,cformer]", "optim.encoder_lr_scale=0.1")
    manifests = [f"{d}/m/aishell_cuts_train.jsonl.gz", f"{d}/m/aishell_cuts_dev.jsonl.gz"]
    cache = d / "enc-top"
    cache_encoder_outputs(cfg(*top), manifests, str(cache))
    assert json.loads((cache / "cache.json").read_text())["train_top"] == 1
    with pytest.raises(XasrError, match="train_top 1"):  # the full encoder's cache does not serve it
        full = d / "enc-full"
        cache_encoder_outputs(cfg(), manifests[1:], str(full))
        Trainer(cfg(*top, f"data.encoder_cache={full}", f"train.exp_dir={tmp_path / 'x'}"))

    trainer = Trainer(cfg(*top, f"data.encoder_cache={cache}", f"train.exp_dir={tmp_path / 'exp'}",
                          "train.max_steps=3", "optim.warmup_steps=1"))
    groups = trainer.optimizer.param_groups
    assert len(groups) == 2 and groups[1]["lr"] == pytest.approx(0.1 * groups[0]["lr"])
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if n.startswith("encoder.")}
    model_dir = trainer.train()
    after = dict(trainer.model.named_parameters())
    moved = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert moved and all(n.startswith(("encoder.encoder.layers.1.", "encoder.encoder.layer_norm.")) for n in moved)
    saved = [k for k in load_file(str(model_dir / "model.safetensors")) if k.startswith("encoder.")]
    assert saved and all(k.startswith(("encoder.encoder.layers.1.", "encoder.encoder.layer_norm.")) for k in saved)

    model, c, _ = load_model_dir(str(model_dir))
    for n in saved:
        assert torch.equal(dict(model.named_parameters())[n], after[n].detach())
    live = AsrDataset(c.data.units, "whisper_mel")[CutSet.from_file(manifests[1])]
    stored = AsrDataset(c.data.units, "whisper_mel", encoded=True)[CutSet.from_file(cache / Path(manifests[1]).name)]
    with torch.no_grad():
        (h1, n1), (h2, n2) = model.encode_batch(live), model.encode_batch(stored)
    assert torch.equal(n1, n2)
    torch.testing.assert_close(h1, h2, atol=3e-2, rtol=1e-2)  # float16 storage of the frozen part
