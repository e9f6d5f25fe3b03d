"""Joint LLM + CTC decoding: exact CTC prefix probabilities, and the search on a tiny random LLM."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from xasr.decoding.joint_ctc import CtcPrefixScorer


def _random_log_probs(T: int, V: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    x = g.normal(size=(T, V)) * 2
    return x - np.logaddexp.reduce(x, axis=1, keepdims=True)


def _collapse(path, blank=0):
    out, prev = [], None
    for p in path:
        if p != prev and p != blank:
            out.append(p)
        prev = p
    return tuple(out)


def _brute_force(lp: np.ndarray):
    """P(transcript = y) and P(transcript starts with y) for every y, by enumerating all paths."""
    T, V = lp.shape
    full, prefix = {}, {}
    for path in itertools.product(range(V), repeat=T):
        p = math.exp(sum(lp[t, s] for t, s in enumerate(path)))
        y = _collapse(path)
        full[y] = full.get(y, 0.0) + p
        for k in range(len(y) + 1):
            prefix[y[:k]] = prefix.get(y[:k], 0.0) + p
    return full, prefix


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prefix_and_full_scores_match_brute_force(seed):
    lp = _random_log_probs(T=6, V=3, seed=seed)
    full, prefix = _brute_force(lp)
    sc = CtcPrefixScorer(lp, blank=0)
    for y in [(), (1,), (2,), (1, 1), (1, 2), (2, 1, 2), (1, 1, 1), (2, 2, 1, 1)]:
        assert sc.prefix_score(y) == pytest.approx(math.log(prefix.get(y, 1e-300)), abs=1e-9)
        assert sc.full_score(y) == pytest.approx(math.log(full.get(y, 1e-300)), abs=1e-9)


def test_full_score_matches_torch_ctc_loss_on_a_long_utterance():
    lp = _random_log_probs(T=200, V=30, seed=3)
    sc = CtcPrefixScorer(lp)
    y = tuple(int(v) for v in np.random.default_rng(4).integers(1, 30, size=40))
    y = y[:10] + (y[9],) + y[10:]  # a repeated unit
    ref = -torch.nn.functional.ctc_loss(torch.tensor(lp)[:, None], torch.tensor([y]), torch.tensor([200]),
                                        torch.tensor([len(y)]), blank=0, reduction="sum")
    assert sc.full_score(y) == pytest.approx(float(ref), rel=1e-9)


def test_next_unit_scores_equal_the_prefix_scores_of_each_extension():
    lp = _random_log_probs(T=7, V=4, seed=5)
    sc = CtcPrefixScorer(lp)
    for parent in [(), (2,), (2, 3)]:
        nxt = sc.next_unit_scores(parent)
        assert nxt[0] == -np.inf
        for c in range(1, 4):
            assert nxt[c] == pytest.approx(CtcPrefixScorer(lp).prefix_score(parent + (c,)), abs=1e-9)


def test_scores_fall_as_a_sequence_grows():
    lp = _random_log_probs(T=50, V=6, seed=6)
    sc = CtcPrefixScorer(lp)
    y = (1, 4, 4, 2, 5, 3)
    scores = [sc.prefix_score(y[:k]) for k in range(len(y) + 1)]
    assert all(a >= b for a, b in zip(scores, scores[1:]))
    assert all(sc.full_score(y[:k]) <= sc.prefix_score(y[:k]) for k in range(len(y) + 1))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="CTC log-probabilities"):
        CtcPrefixScorer(np.zeros((0, 5)))


# ---------------------------------------------------------------------- the search
from tests.models.tiny_llm import make_tiny_llm  # noqa: E402
from xasr.decoding.joint_ctc import UnitMap, joint_ctc_generate  # noqa: E402
from xasr.decoding.speculative import DecodeStats  # noqa: E402
from xasr.models.llm import FrozenLLM, LLMConfig  # noqa: E402


def _units(tmp_path, lines, model_type, vocab_size=None):
    import sentencepiece as spm

    f = tmp_path / f"{model_type}.txt"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    kw = dict(input=str(f), model_prefix=str(tmp_path / model_type), model_type=model_type,
              user_defined_symbols=["<blk>", "<sos/eos>"], unk_id=2, bos_id=-1, eos_id=-1, minloglevel=2,
              character_coverage=1.0)
    if model_type == "char":
        kw.update(vocab_size=len(set("".join(lines))) + 3, add_dummy_prefix=False)
    else:
        kw.update(vocab_size=vocab_size, hard_vocab_limit=False)
    spm.SentencePieceTrainer.train(**kw)
    return spm.SentencePieceProcessor(model_file=str(tmp_path / f"{model_type}.model"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("joint")
    llm = FrozenLLM(LLMConfig(path=str(make_tiny_llm(d / "llm", hidden=64))))
    units = _units(d, ["今天天气很好", "我们去公园"], "char")
    return llm, units


def _peaked(units, text: str, frames_per_unit: int = 3, p: float = 0.9, seed: int = 0) -> np.ndarray:
    """CTC log-probabilities that spell ``text``: each unit on one frame, blanks around it."""
    ids = units.encode(text)
    V = units.get_piece_size()
    T = frames_per_unit * len(ids) + 2
    g = np.random.default_rng(seed)
    probs = g.uniform(0.5, 1.0, size=(T, V))
    best = [0] * T
    for k, u in enumerate(ids):
        best[1 + frames_per_unit * k] = u
    for t, b in enumerate(best):
        probs[t] *= (1 - p) / (probs[t].sum() - probs[t, b])
        probs[t, b] = p
    return np.log(probs / probs.sum(axis=1, keepdims=True))


def _prompts(llm, lens, seed=1):
    g = torch.Generator().manual_seed(seed)
    speech = [torch.randn(n, llm.embed_dim, generator=g) * 4 for n in lens]
    return llm.generation_inputs(speech)


@pytest.mark.parametrize("w", [1.0, 0.6])
def test_search_follows_a_confident_ctc_head(tiny, w):
    """Whatever the (random) LLM prefers, a CTC head that is sure of the text wins; the CTC head's
    proposals reach characters outside the LLM's own top tokens."""
    llm, units = tiny
    um = UnitMap(units, llm.tokenizer)
    assert all(um.token(u, False) is not None for u in units.encode("天气很好"))
    emb, mask = _prompts(llm, [3, 5])
    targets = ["天气很好", "好天天气"]  # characters the tiny tokenizer writes as one token each; a doubled one
    out = joint_ctc_generate(llm, emb, mask, [_peaked(units, t) for t in targets], um, [20, 20], beam=3,
                             ctc_weight=w, pre_beam=4)
    assert ["".join(llm.decode(o).split()) for o in out] == targets


def test_rows_decode_the_same_alone_and_in_a_batch(tiny):
    llm, units = tiny
    um = UnitMap(units, llm.tokenizer)
    lens, texts = [2, 6, 4], ["今天", "天气很好", "公园"]
    ctc = [_peaked(units, t, p=0.5, seed=k) for k, t in enumerate(texts)]
    emb, mask = _prompts(llm, lens)
    stats = DecodeStats()
    batched = joint_ctc_generate(llm, emb, mask, ctc, um, [8, 10, 6], beam=3, ctc_weight=0.3, pre_beam=5,
                                 stats=stats)
    for b in range(3):
        e, m = _prompts(llm, lens)
        alone = joint_ctc_generate(llm, e[b:b + 1, -int(m[b].sum()):], m[b:b + 1, -int(m[b].sum()):], [ctc[b]], um,
                                   [[8, 10, 6][b]], beam=3, ctc_weight=0.3, pre_beam=5)
        assert alone[0] == batched[b]
    assert stats.utterances == 3 and stats.forward_calls > 0 and stats.output_tokens == sum(map(len, batched))
    assert all(len(o) <= n for o, n in zip(batched, [8, 10, 6]))


def test_length_bound_and_bad_settings(tiny):
    llm, units = tiny
    um = UnitMap(units, llm.tokenizer)
    emb, mask = _prompts(llm, [3])
    out = joint_ctc_generate(llm, emb, mask, [_peaked(units, "今天天气很好")], um, [2], beam=2, ctc_weight=0.5)
    assert len(out[0]) <= 2
    with pytest.raises(ValueError, match="ctc_weight"):
        joint_ctc_generate(llm, emb, mask, [_peaked(units, "今天")], um, [2], ctc_weight=1.5)


def test_unit_map_scores_complete_words_with_word_pieces(tmp_path):
    lines = ["THE CAT SAT ON THE MAT", "THE DOG RAN", "A CAT AND A DOG"] * 5
    units = _units(tmp_path, lines, "bpe", vocab_size=30)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(make_tiny_llm(tmp_path / "llm")))
    um = UnitMap(units, tok, target_case="lower")
    assert um.word_pieces
    # the unfinished last word is scored without its last piece
    assert um.units("the ca", final=False) == tuple(units.encode("THE")) + tuple(units.encode("CA"))[:-1]
    assert um.units("the ca", final=True) == tuple(units.encode("THE CA"))
    assert um.units("the", final=False) == tuple(units.encode("THE"))[:-1]
    assert um.units("the cat sat", final=False)[:len(units.encode("THE CAT"))] == tuple(units.encode("THE CAT"))
    assert um.units("the cat\ufffd", final=False) is None  # ends inside a character
    assert um.spelling("the  cat ") == "the cat"
    chars = UnitMap(_units(tmp_path, ["今天天气很好"], "char"), tok)
    assert not chars.word_pieces and chars.spelling("今天 天气") == "今天天气"
    assert chars.units("今天 天气", final=False) == tuple(chars.sp.encode("今天天气"))


def test_extension_scores_of_several_parents_and_a_single_frame():
    lp = _random_log_probs(T=7, V=5, seed=8)
    sc = CtcPrefixScorer(lp)
    parents = [(), (3,), (3, 1), (2, 2)]
    got = sc.extension_scores(parents, np.array([1, 2, 3, 4]))
    for h, p in enumerate(parents):
        for j, c in enumerate([1, 2, 3, 4]):
            assert got[h, j] == pytest.approx(CtcPrefixScorer(lp).prefix_score(p + (c,)), abs=1e-9)
    one = CtcPrefixScorer(lp[:1])
    assert one.next_unit_scores((), np.array([2]))[0] == pytest.approx(lp[0, 2])
    assert one.next_unit_scores((2,), np.array([1]))[0] == -np.inf
