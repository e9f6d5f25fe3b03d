"""The image path of the X-LLM model: placeholders, mixed batches, decoding, stage-3 training and
model directories, with a tiny random image encoder, a tiny LLM and a tiny speech model."""
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.models.tiny_image import make_tiny_image_encoder
from tests.models.tiny_llm import make_tiny_llm
from xasr.data.dataset import Batch
from xasr.errors import XasrError
from xasr.models.adapter import AdapterConfig
from xasr.models.cformer import CFormerConfig
from xasr.models.conformer import ConformerConfig
from xasr.models.image_encoder import ImageEncoderConfig
from xasr.models.llm import FrozenLLM, LLMConfig
from xasr.models.model import EncoderSection, ImageSection, ModelConfig, XLLMSpeechModel
from xasr.models.qformer import QFormerConfig

NUM_QUERIES = 4


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    d = tmp_path_factory.mktemp("mm")
    return {"llm": make_tiny_llm(d / "llm"), "image": make_tiny_image_encoder(d / "img/tiny.pt"), "dir": d}


def _cfg(parts, image: bool = True) -> ModelConfig:
    return ModelConfig(
        encoder=EncoderSection(conformer=ConformerConfig(dim=32, num_layers=1, num_heads=2, ff_dim=64,
                                                         conv_kernel=3)),
        cformer=CFormerConfig(dim=32, num_layers=1, num_heads=2, ff_dim=64),
        adapter=AdapterConfig(hidden_dim=32), llm=LLMConfig(path=str(parts["llm"])), use_llm=True, vocab_size=12,
        image=ImageSection(enabled=image, encoder=ImageEncoderConfig(name=parts["image"], image_size=32),
                           qformer=QFormerConfig(dim=16, num_queries=NUM_QUERIES, num_layers=1, num_heads=2,
                                                 ff_dim=32),
                           adapter=AdapterConfig(hidden_dim=16)))


def _model(parts, image: bool = True) -> XLLMSpeechModel:
    torch.manual_seed(0)
    return XLLMSpeechModel(_cfg(parts, image)).eval()


def _batch(has=(True, False)):
    g = torch.Generator().manual_seed(1)
    return Batch(torch.randn(2, 120, 80, generator=g), torch.tensor([120, 90]), ids=["a", "b"],
                 tokens=torch.tensor([[3, 4, 5, 6], [7, 8, 9, -1]]), token_lens=torch.tensor([4, 3]),
                 texts=["hello world", "the cat"], durations=torch.tensor([1.2, 0.9]),
                 images=torch.randn(2, 3, 32, 32, generator=g), has_image=torch.tensor(list(has)))


class Units:  # stands in for the sentencepiece processor in decoding
    def decode(self, ids):
        return " ".join(str(i) for i in ids)


def test_image_placeholders_in_prompts_and_embeddings(parts):
    llm = FrozenLLM(LLMConfig(path=str(parts["llm"])))
    batch = llm.build_inputs([2, 3], targets=["hello", "the cat"], n_image=[4, 0])
    ids = batch["input_ids"]
    assert (ids[0] == llm.image_id).sum() == 4 and (ids[1] == llm.image_id).sum() == 0
    assert [int((ids[b] == llm.speech_id).sum()) for b in (0, 1)] == [2, 3]
    first_image = int((ids[0] == llm.image_id).nonzero()[0])
    assert first_image < int((ids[0] == llm.speech_id).nonzero()[0])  # the picture comes before the speech
    assert llm.prompt_text(with_image=True).count("<image>") == 1 and "<image>" not in llm.prompt_text()
    speech = torch.randn(5, llm.embed_dim)
    image = torch.arange(4 * llm.embed_dim, dtype=torch.float32).reshape(4, llm.embed_dim)
    emb = llm.embed(ids, speech, image)
    assert torch.equal(emb[0][ids[0] == llm.image_id], image)
    with pytest.raises(ValueError, match=r"image placeholders \(4\) and image vectors \(3\)"):
        llm.embed(ids, speech, image[:3])
    with pytest.raises(ValueError, match=r"image placeholders \(4\) and image vectors \(0\)"):
        llm.embed(ids, speech)
    emb, mask = llm.generation_inputs([speech[:2], speech[2:]], [image, None])
    gen = llm.build_inputs([2, 3], n_image=[4, 0])
    assert torch.equal(mask, gen["attention_mask"]) and (gen["input_ids"] == llm.image_id).sum() == 4
    assert torch.equal(emb, llm.embed(gen["input_ids"], speech, image))


def test_parts_exist_only_with_the_image_path(parts):
    off = _model(parts, image=False)
    assert off.image_encoder is None and off.qformer is None and off.image_adapter is None
    assert not any(k.startswith(("qformer.", "image_")) for k in off.state_dict())
    on = _model(parts)
    assert on.qformer.cfg.input_dim == on.image_encoder.output_dim
    assert on.image_adapter.cfg.output_dim == on.llm.embed_dim
    assert {k for k in off.state_dict()} < {k for k in on.state_dict()}
    assert "image_encoder" in on.frozen_parts() and "image_encoder" not in off.frozen_parts()
    with pytest.raises(ValueError, match="model.image.enabled"):
        off.set_trainable(["qformer"])


def test_rows_without_a_picture_get_the_speech_only_prompt(parts):
    off, on = _model(parts, image=False), _model(parts)
    plain = dataclasses.replace(_batch(), images=None, has_image=None)
    with torch.no_grad():
        ref = off(plain, stage=2)["loss"]
        assert torch.allclose(off(_batch(), stage=2)["loss"], ref)  # no image path: pictures are ignored
        assert torch.allclose(on(_batch(has=(False, False)), stage=3)["loss"], ref, atol=1e-5)
        assert torch.allclose(on(plain, stage=2)["loss"], ref, atol=1e-5)
        mixed = on(_batch(), stage=3)["loss"]
        other = _batch()
        other.images[1] = torch.randn(3, 32, 32)  # the picture of a row without one does not count
        assert torch.equal(on(other, stage=3)["loss"], mixed)
        other.images[0] = torch.randn(3, 32, 32)  # (a random Q-Former tells pictures apart only a little)
        assert not torch.equal(on(other, stage=3)["loss"], mixed)
    vectors = on.image_vectors(_batch())
    assert vectors[1] is None and vectors[0].shape == (NUM_QUERIES, on.llm.embed_dim)
    with pytest.raises(ValueError, match="stage 3 needs model.image.enabled"):
        off(_batch(), stage=3)


def test_stage3_gradients_reach_only_the_image_interface(parts):
    model = _model(parts)
    model.set_trainable(["qformer", "image_adapter"])
    model.train()
    assert not model.image_encoder.training and not model.llm.training and not model.cformer.training
    out = model(_batch(), stage=3)
    out["loss"].backward()
    with_grad = {n.split(".", 1)[0] for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {"qformer", "image_adapter"}
    assert model.qformer.queries.grad.abs().sum() > 0
    assert model.image_adapter.net[0].weight.grad.abs().sum() > 0
    # a batch without pictures still gives a loss to backpropagate: zero gradients for the image interface
    model.zero_grad()
    model(_batch(has=(False, False)), stage=3)["loss"].backward()
    assert model.qformer.queries.grad is not None and model.qformer.queries.grad.abs().sum() == 0


def test_near_zero_query_groups_are_left_out_of_the_prompt(parts):
    model = _model(parts)
    model.cfg.image.drop_empty_groups = 2
    d = model.llm.embed_dim
    norm = float(model.llm.model.get_input_embeddings().weight.norm(dim=-1).mean())
    word = torch.full((d,), norm / d ** 0.5)  # a vector of the mean token-embedding norm
    fitted = torch.stack([word, word, 0.01 * word, 0.01 * word])  # (4, D): a filled group, an empty one
    model.image_adapter.forward = lambda x: fitted.expand(x.shape[0], -1, -1)
    vectors = model.image_vectors(_batch(has=(True, True)))
    assert [v.shape[0] for v in vectors] == [2, 2] and torch.equal(vectors[0], fitted[:2])
    # both groups empty: the row gets the speech-only prompt, as without a picture
    model.image_adapter.forward = lambda x: (0.01 * fitted).expand(x.shape[0], -1, -1)
    assert model.image_vectors(_batch(has=(True, False))) == [None, None]
    with torch.no_grad():
        loss = model(_batch(has=(True, False)), stage=3)["loss"]
        assert torch.allclose(loss, model(_batch(has=(False, False)), stage=3)["loss"])
    model.cfg.image.drop_empty_groups = 3
    with pytest.raises(XasrError, match="does not divide the 4 queries"):
        model.image_vectors(_batch())


def test_decoding_with_and_without_pictures(parts):
    model = _model(parts)
    batch = _batch()
    from xasr.decoding.methods import decode

    texts = decode(model, batch, "llm_greedy", Units()).texts
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    other = _batch()
    other.images[1] = torch.randn(3, 32, 32)
    assert decode(model, other, "llm_greedy", Units()).texts == texts
    assert len(decode(model, batch, "llm_beam", Units()).texts) == 2
    with pytest.raises(XasrError, match="does not take images yet"):
        decode(model, batch, "llm_speculative", Units())


# ---------------------------------------------------------------------- stage-3 training
TINY = ["model.encoder.conformer.dim=32", "model.encoder.conformer.num_layers=1",
        "model.encoder.conformer.num_heads=2", "model.encoder.conformer.ff_dim=64",
        "model.encoder.conformer.conv_kernel=3", "model.cformer.dim=32", "model.cformer.num_layers=1",
        "model.cformer.num_heads=2", "model.cformer.ff_dim=64", "model.adapter.hidden_dim=32"]
TINY_IMAGE = ["model.image.encoder.image_size=32", "model.image.qformer.dim=16",
              f"model.image.qformer.num_queries={NUM_QUERIES}", "model.image.qformer.num_layers=1",
              "model.image.qformer.num_heads=2", "model.image.qformer.ff_dim=32", "model.image.adapter.hidden_dim=16"]


@pytest.fixture(scope="module")
def corpus(parts):
    """Four cuts of noise with texts, three with a picture, and character units."""
    from lhotse import CutSet, Recording, SupervisionSegment
    from PIL import Image

    from xasr.data.units import train_units

    d = parts["dir"] / "corpus"
    d.mkdir()
    texts = ["the cat sat", "hello world", "a b c", "one two"]
    cuts = []
    for i, text in enumerate(texts):
        sf.write(d / f"u{i}.wav", np.random.default_rng(i).normal(0, 0.1, 12000 + 2000 * i).astype("float32"), 16000)
        cut = Recording.from_file(d / f"u{i}.wav", recording_id=f"u{i}").to_cut()
        cut.supervisions = [SupervisionSegment(f"u{i}", f"u{i}", 0, cut.duration, text=text)]
        if i < 3:
            Image.fromarray(np.random.default_rng(10 + i).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                d / f"p{i}.png")
            cut.custom = {"image": f"p{i}.png"}  # relative to data.image_dir
        cuts.append(cut)
    CutSet.from_cuts(cuts).to_file(d / "cuts.jsonl.gz")
    train_units([str(d / "cuts.jsonl.gz")], str(d / "lang"), "char")
    return d


def _overrides(parts, corpus, exp, *extra):
    return [f"data.train_cuts=[{corpus}/cuts.jsonl.gz]", f"data.valid_cuts=[{corpus}/cuts.jsonl.gz]",
            f"data.units={corpus}/lang/unit.model", "data.features=whisper_mel", "data.max_duration=30",
            f"train.exp_dir={exp}", "train.log_interval=1", "train.tensorboard=false", "train.num_threads=1",
            "train.num_epochs=20", "model.use_llm=true", f"model.llm.path={parts['llm']}", *TINY, *extra]


@pytest.mark.slow
def test_stage3_trains_the_image_interface_from_a_stage2_model(parts, corpus, tmp_path):
    from safetensors.torch import load_file, save_file

    from xasr.config import load_experiment
    from xasr.data.dataset import AsrDataset
    from xasr.models.image_encoder import image_loading
    from xasr.model_dir import load_model_dir
    from xasr.trainer import Trainer, train

    s2 = train(load_experiment(_overrides(parts, corpus, tmp_path / "s2", "train.stage=2", "train.max_steps=2",
                                          "train.trainable=[adapter]")))
    stage3 = _overrides(parts, corpus, tmp_path / "s3", "train.stage=3", "train.max_steps=3", f"train.init_from={s2}",
                        "train.trainable=[qformer,image_adapter]", "data.images=true", f"data.image_dir={corpus}",
                        "model.image.enabled=true", f"model.image.encoder.name='{parts['image']}'", *TINY_IMAGE)
    with pytest.raises(XasrError, match="data.images=true"):
        Trainer(load_experiment([a for a in stage3 if a != "data.images=true"]))
    trainer = Trainer(load_experiment(stage3))
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    w2 = load_file(str(s2 / "model.safetensors"))
    for k, v in w2.items():  # the speech path starts from the stage-2 model
        assert torch.equal(start[k], v), k
    assert "qformer" in (tmp_path / "s3/train.log").read_text().split("initialised afresh")[1]
    s3 = trainer.train()

    end = trainer.model.state_dict()
    changed = {k.split(".", 1)[0] for k in end if not torch.equal(end[k], start[k])}
    assert changed == {"qformer", "image_adapter"}  # nothing else moved, frozen batch norm statistics included
    w3 = load_file(str(s3 / "model.safetensors"))
    assert not any(k.startswith(("image_encoder.", "llm.")) for k in w3)  # frozen parts are never saved
    assert any(k.startswith("qformer.") for k in w3) and any(k.startswith("image_adapter.") for k in w3)
    for k, v in w2.items():
        assert torch.equal(w3[k], v), k
    frozen = json.loads((s3 / "frozen_parts.json").read_text())
    assert frozen["image_encoder"]["path"] == parts["image"].split(":", 1)[1] and "llm" in frozen

    # the model directory round-trips: same weights, same transcripts
    model, cfg, units = load_model_dir(str(s3))
    assert cfg.model.image.enabled and cfg.data.images
    loaded = model.state_dict()
    for k, v in end.items():
        assert torch.equal(loaded[k], v), k
    from lhotse import CutSet
    cuts = CutSet.from_file(corpus / "cuts.jsonl.gz")
    batch = AsrDataset(None, "whisper_mel", images=image_loading(cfg.data, cfg.model.image.encoder))[cuts]
    assert batch.has_image.sum() == 3
    trainer.model.eval()
    from xasr.decoding.methods import decode
    assert decode(model, batch, "llm_greedy", units).texts == decode(trainer.model, batch, "llm_greedy", units).texts

    # decoding from the command line: own pictures, shuffled pictures (the control), no pictures
    from xasr.bin.cli import main
    for name, extra in (("own", []), ("shuffled", ["--image-shuffle-seed", "0"]), ("none", ["--no-images"]),
                        ("no_loop_cut", ["--repeat-ngram", "0"])):
        assert main(["decode", "--model-dir", str(s3), "--cuts", f"test={corpus}/cuts.jsonl.gz", "--methods",
                     "llm_greedy", "--out-dir", str(tmp_path / name), "--normalizer", "none", *extra]) == 0
        assert (tmp_path / name / "recogs-test-llm_greedy.txt").is_file()
    assert main(["decode", "--model-dir", str(s2), "--cuts", f"test={corpus}/cuts.jsonl.gz", "--out-dir",
                 str(tmp_path / "bad"), "--image-shuffle-seed", "0"]) == 1  # a model without pictures
    assert main(["decode", "--model-dir", str(s3), "--cuts", f"test={corpus}/cuts.jsonl.gz", "--out-dir",
                 str(tmp_path / "bad"), "--repeat-ngram", "-1"]) == 1

    # a finished model directory must hold the image weights ...
    broken = tmp_path / "broken"
    shutil.copytree(s3, broken)
    save_file({k: v for k, v in w3.items() if not k.startswith("qformer.")}, str(broken / "model.safetensors"))
    with pytest.raises(XasrError, match="does not fit the model: missing .*qformer"):
        load_model_dir(str(broken))
    # ... and refuses another image encoder than the one it was trained with
    make_tiny_image_encoder(Path(parts["image"].split(":", 1)[1]), seed=1)
    try:
        with pytest.raises(XasrError, match="was trained with the frozen image_encoder"):
            load_model_dir(str(s3))
    finally:
        make_tiny_image_encoder(Path(parts["image"].split(":", 1)[1]), seed=0)
