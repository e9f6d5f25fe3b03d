"""The LLM scoring only the tokens the units spell (model.llm_vocab=units): which tokens, the
restricted output layer, and greedy / speculative decoding inside it."""
import random

import pytest
import torch

from tests.decoding.test_joint_ctc import _units
from tests.models.tiny_llm import make_tiny_llm
from xasr.decoding.generate import generate_ids
from xasr.decoding.options import DecodingOptions
from xasr.decoding.speculative import speculative_generate
from xasr.data.units import text_pieces
from xasr.decoding.vocab import unit_vocabulary
from xasr.errors import XasrError
from xasr.models.llm import FrozenLLM, LLMConfig, SubsetHead
from xasr.models.model import ModelConfig


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("vocab")
    llm_dir = make_tiny_llm(d / "llm", hidden=64)
    yield llm_dir, d
    torch.set_num_threads(before)


def _random_texts(units, n=300, seed=0):
    rng = random.Random(seed)
    size = units.get_piece_size()
    return [units.decode([rng.randrange(3, size) for _ in range(rng.randrange(1, 12))]) for _ in range(n)]


@pytest.mark.parametrize("kind", ["char-zh", "bpe-en-upper"])
def test_every_text_of_the_units_is_tokenized_within_the_vocabulary(tiny, kind):
    llm_dir, d = tiny
    if kind == "char-zh":  # the tiny tokenizer is byte-level: these characters need its byte tokens
        llm = FrozenLLM(LLMConfig(path=str(llm_dir)))
        units = _units(d, ["今天天气很好", "我们去公园"], "char")
    else:  # upper-case word pieces, an LLM that writes lower case
        llm = FrozenLLM(LLMConfig(path=str(llm_dir), target_case="lower"))
        units = _units(d, ["THE CAT SAT ON THE MAT", "HELLO WORLD", "ONE TWO THREE"], "bpe", vocab_size=30)
    vocab = unit_vocabulary(llm, units)
    allowed = set(vocab.tolist())
    full = llm.output_layer().weight.shape[0]
    assert vocab.tolist() == sorted(allowed) and max(allowed) < full
    assert llm.stop_id in allowed
    assert 0 < len(allowed) < full
    for text in _random_texts(units):
        ids = llm.target_ids(text)
        assert set(ids) <= allowed, (text, [i for i in ids if i not in allowed])
    chars = set("".join(llm.cased(t) for _, t in text_pieces(units))) | {" "}
    tok = llm.tokenizer
    # a token whose text needs a character the units lack is out ("five", "k" are in the tokenizer)
    for word in ("five", "k"):
        ids = tok.encode(word, add_special_tokens=False)
        if not set(word) <= chars:
            assert not set(ids) <= allowed
    # the special pieces' text (<blk>, <sos/eos>, <unk>) does not count as the units' characters
    assert "<" not in chars and "/" not in chars


def test_output_layer_scores_only_the_vocabulary_and_comes_back(tiny):
    llm_dir, d = tiny
    llm = FrozenLLM(LLMConfig(path=str(llm_dir)))
    ids = torch.tensor([3, 10, 11, 40, llm.stop_id]).unique()
    full = llm.output_layer()
    torch.manual_seed(0)
    emb = torch.randn(2, 5, llm.embed_dim)
    with torch.no_grad():
        ref = llm.model(inputs_embeds=emb).logits
        with llm.output_vocab(ids):
            assert isinstance(llm.output_layer(), SubsetHead)
            sub = llm.model(inputs_embeds=emb).logits
            with pytest.raises(XasrError, match="do not nest"):
                with llm.output_vocab(ids):
                    pass
        after = llm.model(inputs_embeds=emb).logits
    assert sub.shape == ref.shape
    assert torch.allclose(sub[..., ids], ref[..., ids], atol=1e-5)
    outside = torch.ones(ref.shape[-1], dtype=torch.bool)
    outside[ids] = False
    assert torch.isneginf(sub[..., outside]).all()
    assert llm.output_layer() is full and torch.equal(after, ref)
    with llm.output_vocab(None):  # None: the whole vocabulary
        assert llm.output_layer() is full


def test_greedy_and_speculative_agree_inside_the_vocabulary(tiny):
    llm_dir, d = tiny
    llm = FrozenLLM(LLMConfig(path=str(llm_dir)))
    units = _units(d, ["the cat sat on the mat", "hello world"], "char")
    vocab = unit_vocabulary(llm, units)
    allowed = set(vocab.tolist())
    torch.manual_seed(1)
    speech = [torch.randn(n, llm.embed_dim) * 8 for n in (2, 5, 3)]
    emb, mask = llm.generation_inputs(speech)
    bounds = [12, 7, 15]
    with llm.output_vocab(vocab):
        greedy = generate_ids(llm, emb, mask, bounds)
        assert all(set(g) <= allowed for g in greedy)
        drafts = [g[:len(g) // 2] + [llm.stop_id] for g in greedy]
        assert speculative_generate(llm, emb, mask, drafts, bounds) == greedy
    full = generate_ids(llm, emb, mask, bounds)
    assert any(not set(g) <= allowed for g in full), "the tiny LLM should write tokens outside the units"


def test_options_take_full_or_units_only():
    opts = DecodingOptions.from_config(ModelConfig())
    assert opts.llm_vocab == "full"
    assert opts.replace(llm_vocab="units").llm_vocab == "units"
    with pytest.raises(XasrError, match="llm_vocab"):
        opts.replace(llm_vocab="all")
