"""Self-speculative decoding must give exactly the greedy output, with fewer LLM passes when the
draft is right. The reference is :func:`xasr.decoding.generate.generate_ids` (num_beams=1) on a tiny
random LLM."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import List

import pytest
import torch

from tests.models.tiny_llm import make_tiny_llm
from xasr.data.dataset import Batch
from xasr.decoding import speculative
from xasr.decoding.generate import generate_ids
from xasr.decoding.methods import decode, options_for
from xasr.decoding.speculative import (DecodeStats, PassCounter, align_draft, draft_ids, head_confidence,
                                       speculative_decode, speculative_generate)
from xasr.models.llm import FrozenLLM, LLMConfig

LENS = [2, 5, 3, 7, 1, 4]  # speech vectors per utterance: mixed prompt lengths
BOUNDS = [30, 6, 40, 25, 12, 20]


@dataclass
class Setup:
    llm: FrozenLLM
    speech: List[torch.Tensor]
    emb: torch.Tensor
    mask: torch.Tensor
    greedy: List[List[int]]


def _stop_like(llm: FrozenLLM, emb, mask) -> None:
    """Make the end-of-turn token win where some frequent output token would, choosing the token
    that gives the most varied output lengths, so that rows end at different steps."""
    w = llm.model.lm_head.weight
    out = generate_ids(llm, emb, mask, BOUNDS)
    best, best_key = None, None
    for t, _ in Counter(t for row in out for t in row).most_common(8):
        with torch.no_grad():
            saved = w[llm.stop_id].clone()
            w[llm.stop_id] = w[t] * 1.02
            lens = [len(r) for r in generate_ids(llm, emb, mask, BOUNDS)]
            w[llm.stop_id] = saved
        key = (len(set(lens)), sum(n < b for n, b in zip(lens, BOUNDS)))
        if best_key is None or key > best_key:
            best, best_key = t, key
    with torch.no_grad():
        w[llm.stop_id] = w[best] * 1.02


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices: one thread is much faster, and immune to a busy machine's oversubscription."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    # hidden size 64: outputs vary with the speech and do not fall into short cycles
    return make_tiny_llm(tmp_path_factory.mktemp("llm") / "tiny", hidden=64)


@pytest.fixture(scope="module")
def setup(llm_dir) -> Setup:
    llm = FrozenLLM(LLMConfig(path=str(llm_dir)))
    torch.manual_seed(1)
    speech = [torch.randn(n, llm.embed_dim) * 8 for n in LENS]
    emb, mask = llm.generation_inputs(speech)
    with torch.no_grad():
        llm.model.lm_head.weight.mul_(10)  # clear margins between the top two logits
    _stop_like(llm, emb, mask)
    greedy = generate_ids(llm, emb, mask, BOUNDS)
    stopped = sum(len(g) < b for g, b in zip(greedy, BOUNDS))
    assert stopped >= 2 and len({len(g) for g in greedy}) >= 3, "the fixture should end rows at different steps"
    return Setup(llm, speech, emb, mask, greedy)


def _greedy_passes(greedy: List[List[int]], bounds: List[int]) -> List[int]:
    """Forward passes greedy needs per row: one per output token, plus one for the stop token."""
    return [len(g) + (len(g) < b) for g, b in zip(greedy, bounds)]


def _drafts(kind: str, greedy: List[List[int]], stop: int) -> List[List[int]]:
    out = []
    for g in greedy:
        i = len(g) // 2
        d = {
            "exact": g + [stop],
            "empty": [stop],
            "none": [],
            "first": [7] + g[1:] + [stop],
            "middle": g[:i] + [7] + g[i + 1:] + [stop],
            "end": g[:-1] + [7, stop],
            "insertion": g[:i] + [7, 8] + g[i:] + [stop],
            "deletion": g[:i] + g[i + 1:] + [stop],
            "longer": g + [9, 10, 11] * 8 + [stop],
            "garbage": [(5 * j + 11) % 300 for j in range(len(g) + 3)] + [stop],
        }[kind]
        out.append(d)
    return out


KINDS = ["exact", "empty", "none", "first", "middle", "end", "insertion", "deletion", "longer", "garbage"]


@pytest.mark.parametrize("kind", KINDS)
def test_output_equals_greedy_for_any_draft(setup, kind):
    drafts = _drafts(kind, setup.greedy, setup.llm.stop_id)
    stats = DecodeStats()
    out = speculative_generate(setup.llm, setup.emb, setup.mask, drafts, BOUNDS, stats=stats)
    assert out == setup.greedy
    assert stats.utterances == len(LENS) and stats.output_tokens == sum(len(g) for g in setup.greedy)
    # every row alone, with its own prompt length (no batch padding), gives the same
    for b in range(len(LENS)):
        emb, mask = setup.llm.generation_inputs([setup.speech[b]])
        assert speculative_generate(setup.llm, emb, mask, [drafts[b]], [BOUNDS[b]]) == [setup.greedy[b]]


@pytest.mark.parametrize("kind", ["exact", "middle", "deletion", "garbage"])
@pytest.mark.parametrize("options", [dict(adaptive=False), dict(max_proposal=2), dict(tie_margin=0.0)])
def test_output_equals_greedy_under_every_option(setup, kind, options):
    drafts = _drafts(kind, setup.greedy, setup.llm.stop_id)
    assert speculative_generate(setup.llm, setup.emb, setup.mask, drafts, BOUNDS, **options) == setup.greedy


def test_right_draft_takes_one_pass(setup):
    stats = DecodeStats()
    speculative_generate(setup.llm, setup.emb, setup.mask, _drafts("exact", setup.greedy, setup.llm.stop_id), BOUNDS,
                         tie_margin=0.0, stats=stats)
    assert stats.forward_calls == 1 and stats.row_passes == len(LENS)
    # the draft (stop token included) was accepted up to the bound, where no more is proposed:
    # a pass predicts one token more than it proposes
    assert stats.accepted_tokens == sum(min(len(g) + 1, b - 1) for g, b in zip(setup.greedy, BOUNDS))


@pytest.mark.parametrize("kind", ["first", "middle", "end"])
@pytest.mark.parametrize("adaptive", [False, True])
def test_one_wrong_token_costs_one_or_two_more_passes(setup, kind, adaptive):
    stats = DecodeStats()
    speculative_generate(setup.llm, setup.emb, setup.mask, _drafts(kind, setup.greedy, setup.llm.stop_id), BOUNDS,
                         tie_margin=0.0, adaptive=adaptive, stats=stats)
    # the whole rest of the draft is proposed after the wrong token; adaptive proposes half of it
    more = 2 if adaptive else 1
    assert stats.forward_calls <= 1 + more and stats.row_passes <= (1 + more) * len(LENS)


@pytest.mark.parametrize("kind", ["insertion", "deletion"])
@pytest.mark.parametrize("adaptive", [False, True])
def test_realignment_after_an_insertion_or_deletion(setup, kind, adaptive):
    stats = DecodeStats()
    speculative_generate(setup.llm, setup.emb, setup.mask, _drafts(kind, setup.greedy, setup.llm.stop_id), BOUNDS,
                         tie_margin=0.0, adaptive=adaptive, stats=stats)
    assert stats.forward_calls <= (4 if adaptive else 3)
    assert stats.row_passes < sum(_greedy_passes(setup.greedy, BOUNDS)) / 2


@pytest.mark.parametrize("kind", ["empty", "none"])
def test_without_a_draft_it_runs_greedy_steps_and_counts_like_greedy(setup, kind):
    stats = DecodeStats()
    speculative_generate(setup.llm, setup.emb, setup.mask, _drafts(kind, setup.greedy, setup.llm.stop_id), BOUNDS,
                         stats=stats)
    passes = _greedy_passes(setup.greedy, BOUNDS)
    assert stats.forward_calls == max(passes)
    assert stats.row_passes == sum(passes)  # finished rows leave the batch
    # greedy keeps finished rows in its batch, and spends a pass on a stop forced by the bound
    with PassCounter(setup.llm.model) as counter:
        generate_ids(setup.llm, setup.emb, setup.mask, BOUNDS)
    steps = max(len(g) + 1 for g in setup.greedy)
    assert counter.calls == steps and counter.rows == len(LENS) * steps


def test_mixed_drafts_in_one_batch(setup):
    kinds = ["exact", "garbage", "empty", "middle", "deletion", "longer"]
    drafts = [_drafts(k, setup.greedy, setup.llm.stop_id)[b] for b, k in enumerate(kinds)]
    stats = DecodeStats()
    assert speculative_generate(setup.llm, setup.emb, setup.mask, drafts, BOUNDS, stats=stats) == setup.greedy
    assert stats.row_passes < sum(_greedy_passes(setup.greedy, BOUNDS))


def test_batch_order_and_subsets_do_not_change_the_output(setup):
    order = [3, 0, 5, 1, 4, 2]
    drafts = _drafts("middle", setup.greedy, setup.llm.stop_id)
    emb, mask = setup.llm.generation_inputs([setup.speech[b] for b in order])
    out = speculative_generate(setup.llm, emb, mask, [drafts[b] for b in order], [BOUNDS[b] for b in order])
    assert out == [setup.greedy[b] for b in order]
    assert generate_ids(setup.llm, emb, mask, [BOUNDS[b] for b in order]) == out


def test_close_calls_are_recomputed_alone_and_change_nothing(setup):
    stats = DecodeStats()
    drafts = _drafts("exact", setup.greedy, setup.llm.stop_id)
    # every position counts as nearly tied: each token is then checked by a single-token step
    out = speculative_generate(setup.llm, setup.emb, setup.mask, drafts, BOUNDS, tie_margin=float("inf"), stats=stats)
    assert out == setup.greedy
    assert stats.close_calls > 0


def test_bounds_cut_the_output_like_greedy(setup):
    bounds = [0, 1, 2, 3, 5, 8]
    greedy = generate_ids(setup.llm, setup.emb, setup.mask, bounds)
    assert all(len(g) <= b for g, b in zip(greedy, bounds)) and greedy[0] == []
    for kind in ("exact", "garbage", "empty"):
        drafts = _drafts(kind, setup.greedy, setup.llm.stop_id)
        assert speculative_generate(setup.llm, setup.emb, setup.mask, drafts, bounds) == greedy


def test_greedy_bound_holds_beyond_the_prompt_length(setup):
    # generate_ids once counted steps from the prompt length, so a bound longer than the prompt did not hold
    llm = setup.llm
    emb, mask = llm.generation_inputs([setup.speech[4]])
    bound = emb.shape[1] + 10
    w = llm.model.lm_head.weight
    saved = w[llm.stop_id].clone()
    with torch.no_grad():
        w[llm.stop_id] = 0.0  # a zero logit: below the best of the sharpened others, so no stop
    try:
        out = generate_ids(llm, emb, mask, [bound])
        spec = speculative_generate(llm, emb, mask, [[llm.stop_id]], [bound])
    finally:
        with torch.no_grad():
            w[llm.stop_id] = saved
    assert len(out[0]) == bound and spec == out


def test_cache_compaction_keeps_the_output(setup, monkeypatch):
    monkeypatch.setattr(speculative, "_should_compact", lambda length, longest: True)
    kinds = ["exact", "garbage", "middle", "insertion", "deletion", "longer"]
    drafts = [_drafts(k, setup.greedy, setup.llm.stop_id)[b] for b, k in enumerate(kinds)]
    assert speculative_generate(setup.llm, setup.emb, setup.mask, drafts, BOUNDS, adaptive=False) == setup.greedy


def test_compact_gathers_valid_columns_left_padded():
    from transformers import DynamicCache

    cache = DynamicCache()
    keys = torch.arange(2 * 1 * 5 * 2, dtype=torch.float32).view(2, 1, 5, 2)  # (B, H, C, Dh)
    cache.update(keys, -keys, 0)
    mask = torch.tensor([[1, 0, 1, 0, 0], [1, 1, 0, 1, 1]])
    new = speculative._compact(cache, mask)
    assert new.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    layer = cache.layers[0]
    assert torch.equal(layer.keys[0, 0, 2:], keys[0, 0, [0, 2]])
    assert torch.equal(layer.keys[1, 0], keys[1, 0, [0, 1, 3, 4]])
    assert torch.equal(layer.values, -layer.keys)


def test_align_draft():
    draft = [1, 2, 3, 4, 5, 6, 7, 8]
    assert align_draft([1, 2, 9], draft, guess=3) == 3  # substitution: nothing matches, keep the guess
    assert align_draft([1, 2, 9, 3], draft, guess=4) == 3  # the output inserted 9: the draft goes on after 3
    assert align_draft([1, 2, 4], draft, guess=3) == 4  # the output skipped 3
    assert align_draft([], draft, guess=0) == 0
    # among equal matches the nearest to the guess wins; a longer match beats a nearer one
    assert align_draft([7, 2], [2, 5, 5, 2, 5, 5, 2], guess=4) == 4
    assert align_draft([1, 2], [1, 2, 0, 0, 2, 0], guess=5) == 2


def test_draft_ids_are_the_training_targets(setup, llm_dir, tmp_path):
    llm = setup.llm
    assert draft_ids(llm, "hello world") == llm.target_ids("hello world")
    assert draft_ids(llm, "hello world")[-1] == llm.stop_id
    assert draft_ids(llm, "") == [llm.stop_id] and draft_ids(llm, "  ") == [llm.stop_id]
    lower = FrozenLLM(LLMConfig(path=str(llm_dir), target_case="lower"))
    assert draft_ids(lower, "HELLO WORLD") == lower.target_ids("hello world")
    base = FrozenLLM(LLMConfig(path=str(make_tiny_llm(tmp_path / "b", chat_template=False))))
    ids = draft_ids(base, "hello world")
    assert ids[-1] == base.stop_id and base.tokenizer.decode(ids[:-1]) == " hello world"


def test_head_confidence():
    logits = torch.tensor([[[10.0, 0.0], [0.0, 0.0], [0.0, 10.0]], [[0.0, 10.0], [0.0, 0.0], [0.0, 0.0]]])
    conf = head_confidence(logits, torch.tensor([3, 1]))
    assert conf[0] == pytest.approx(0.5) and conf[1] > 0.99
    assert head_confidence(logits, torch.tensor([0, 1]))[0] == 0.0


def test_fast_path_takes_confident_drafts_only(setup):
    drafts = _drafts("garbage", setup.greedy, setup.llm.stop_id)
    conf = [0.99, 0.1, 0.95, 0.2, 0.5, 0.9]
    out, stats = speculative_decode(setup.llm, setup.speech, drafts, BOUNDS, conf, fast_path_threshold=0.9)
    for b, c in enumerate(conf):
        assert out[b] == (drafts[b][:-1][:BOUNDS[b]] if c >= 0.9 else setup.greedy[b])
    assert stats.fast_path == 3 and stats.utterances == len(LENS)
    out, stats = speculative_decode(setup.llm, setup.speech, drafts, BOUNDS, conf, fast_path_threshold=None)
    assert out == setup.greedy and stats.fast_path == 0


# ---------------------------------------------------------------------- the model's decoding methods
class _Units:
    """Stands in for the sentencepiece units: unit i is a word of the tiny LLM's texts."""

    WORDS = "the cat sat on mat hello world one two three four five".split()

    def decode(self, ids):
        return " ".join(self.WORDS[i % len(self.WORDS)] for i in ids)


@pytest.fixture(scope="module")
def tiny_model(llm_dir):
    from xasr.models.model import ModelConfig, XLLMSpeechModel

    cfg = ModelConfig(use_llm=True, vocab_size=24)
    cfg.encoder.conformer.dim, cfg.encoder.conformer.num_layers = 32, 1
    cfg.encoder.conformer.num_heads, cfg.encoder.conformer.ff_dim, cfg.encoder.conformer.conv_kernel = 2, 64, 3
    cfg.cformer.dim, cfg.cformer.num_layers, cfg.cformer.num_heads, cfg.cformer.ff_dim = 32, 1, 2, 64
    cfg.adapter.hidden_dim = 32
    cfg.llm.path = str(llm_dir)
    torch.manual_seed(0)
    model = XLLMSpeechModel(cfg).eval()
    with torch.no_grad():
        model.llm.model.lm_head.weight.mul_(10)
    g = torch.Generator().manual_seed(3)
    lens = torch.tensor([180, 60, 130, 95])
    batch = Batch(torch.randn(4, 180, 80, generator=g), lens)
    return model, batch


def test_model_speculative_methods_equal_greedy(tiny_model):
    model, batch = tiny_model
    units = _Units()
    g = decode(model, batch, "llm_greedy", units)
    greedy, g_stats = g.texts, g.stats
    assert g_stats.utterances == 4 and g_stats.row_passes > 0 and g_stats.output_tokens > 0
    for draft in ("cif", "ctc", "ctc_beam"):
        opts = options_for(model, speculative_draft=draft)
        r = decode(model, batch, "llm_speculative", units, opts)
        assert r.texts == greedy
        s = r.stats
        assert s.utterances == 4 and s.draft_tokens > 0 and s.output_tokens == g_stats.output_tokens
        assert s.row_passes <= g_stats.row_passes
        # never confident enough: the same as speculative
        r = decode(model, batch, "llm_fast", units, opts.replace(fast_path_threshold=1.01))
        assert r.texts == greedy and r.stats.fast_path == 0
    # always confident: the CIF head's transcripts, no LLM pass
    fast = decode(model, batch, "llm_fast", units, options_for(model, fast_path_threshold=0.0))
    assert fast.stats.fast_path == 4 and fast.stats.row_passes == 0
    assert fast.texts == decode(model, batch, "cif_greedy", units).texts


def test_model_speculative_batched_equals_unbatched(tiny_model):
    model, batch = tiny_model
    units = _Units()
    together = decode(model, batch, "llm_speculative", units).texts
    for b in range(4):
        n = int(batch.feat_lens[b])
        one = Batch(batch.feats[b:b + 1, :n], batch.feat_lens[b:b + 1])
        assert decode(model, one, "llm_speculative", units).texts == [together[b]]
        assert decode(model, one, "llm_greedy", units).texts == [together[b]]


def test_llm_rescore_runs_no_llm_where_its_weight_is_zero(tiny_model):
    """At CTC weight 1 the LLM's scores count zero times: the same choice without an LLM pass, unless
    the scores are asked for (choosing the weights reads them)."""
    model, batch = tiny_model
    units = _Units()
    opts = options_for(model, ctc_beam_size=4).replace(rescore_ctc_weight=1.0, rescore_length_bonus=0.0)
    skipped = decode(model, batch, "llm_rescore", units, opts)
    assert skipped.stats.row_passes == 0 and skipped.stats.forward_calls == 0
    assert skipped.texts == decode(model, batch, "ctc_beam", units, opts).texts
    assert all(h[3] == 0.0 for nb in skipped.nbest for h in nb)
    scored = decode(model, batch, "llm_rescore", units, opts, llm_scores=True)
    assert scored.texts == skipped.texts and scored.stats.row_passes > 0
    assert [[h[:3] for h in nb] for nb in scored.nbest] == [[h[:3] for h in nb] for nb in skipped.nbest]
    assert all(h[3] < 0.0 for nb in scored.nbest for h in nb)
    # below weight 1 the LLM runs, and its scores are the ones asked for above
    mixed = decode(model, batch, "llm_rescore", units, opts.replace(rescore_ctc_weight=0.5))
    assert mixed.stats.row_passes > 0
    assert [h[3] for nb in mixed.nbest for h in nb] == pytest.approx([h[3] for nb in scored.nbest for h in nb])


def test_lora_wrapped_llm(llm_dir):
    from xasr.models.llm import LoraSettings

    llm = FrozenLLM(LLMConfig(path=str(llm_dir), lora=LoraSettings(enabled=True, r=4)))
    speech = [torch.randn(n, llm.embed_dim) * 8 for n in (3, 6)]
    emb, mask = llm.generation_inputs(speech)
    with PassCounter(llm.model) as counter:
        greedy = generate_ids(llm, emb, mask, [10, 14])
    assert counter.calls > 0
    stats = DecodeStats()
    drafts = [g[:3] + [7] + g[4:] + [llm.stop_id] for g in greedy]
    assert speculative_generate(llm, emb, mask, drafts, [10, 14], stats=stats) == greedy
    assert stats.forward_calls < counter.calls


def test_sliding_window_llm(llm_dir, tmp_path):
    """A window shorter than the sequences: rows must see exactly the tokens greedy sees."""
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    tok = AutoTokenizer.from_pretrained(str(llm_dir))
    tok.save_pretrained(tmp_path)
    torch.manual_seed(0)
    MistralForCausalLM(MistralConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, sliding_window=24, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)).save_pretrained(tmp_path)
    llm = FrozenLLM(LLMConfig(path=str(tmp_path)))
    with torch.no_grad():
        llm.model.lm_head.weight.mul_(10)
    speech = [torch.randn(n, llm.embed_dim) * 8 for n in LENS]
    emb, mask = llm.generation_inputs(speech)
    assert emb.shape[1] + min(BOUNDS) > 24  # the window matters
    greedy = generate_ids(llm, emb, mask, BOUNDS)
    kinds = ["middle", "garbage", "insertion", "deletion", "exact", "empty"]
    drafts = [_drafts(k, greedy, llm.stop_id)[b] for b, k in enumerate(kinds)]
    assert speculative_generate(llm, emb, mask, drafts, BOUNDS, adaptive=False) == greedy
    assert speculative_generate(llm, emb, mask, drafts, BOUNDS, adaptive=True) == greedy


def test_posterior_mix_model_feeds_the_head_posteriors_and_speculative_still_equals_greedy(llm_dir):
    from xasr.models.model import ModelConfig, XLLMSpeechModel

    cfg = ModelConfig(use_llm=True, vocab_size=24)
    cfg.encoder.conformer.dim, cfg.encoder.conformer.num_layers = 32, 1
    cfg.encoder.conformer.num_heads, cfg.encoder.conformer.ff_dim, cfg.encoder.conformer.conv_kernel = 2, 64, 3
    cfg.cformer.dim, cfg.cformer.num_layers, cfg.cformer.num_heads, cfg.cformer.ff_dim = 32, 1, 2, 64
    cfg.adapter.hidden_dim = 32
    cfg.adapter.posterior_mix = True
    cfg.llm.path = str(llm_dir)
    torch.manual_seed(1)
    model = XLLMSpeechModel(cfg).eval()
    assert model.adapter.unit_table.shape == (24, model.llm.embed_dim)
    with torch.no_grad():
        model.adapter.unit_table.normal_(0, 8.0)
        model.llm.model.lm_head.weight.mul_(10)
    g = torch.Generator().manual_seed(5)
    batch = Batch(torch.randn(3, 150, 80, generator=g), torch.tensor([150, 70, 110]))
    with torch.no_grad():
        h, h_lens = model.encode_batch(batch)
        cf = model.cformer(h, h_lens, alphas=model.cif_alphas(h, h_lens))
        expected = model.adapter.mlp(cf.vectors) + cf.logits.softmax(-1) @ model.adapter.unit_table
        assert torch.allclose(model.speech_embeddings(cf), expected, atol=1e-5)
    units = _Units()
    greedy = decode(model, batch, "llm_greedy", units).texts
    assert decode(model, batch, "llm_speculative", units).texts == greedy


def _loop_ngram(greedy: List[List[int]]) -> int:
    """The smallest run length whose repeat cuts some greedy rows of the fixture but not all."""
    from xasr.decoding.loops import cut_repeat

    for n in (2, 3, 4, 5):
        cut = sum(cut_repeat(g, n) != g for g in greedy)
        if 0 < cut < len(greedy):
            return n
    pytest.fail("the fixture's greedy outputs should repeat themselves in some rows")


def test_greedy_stopped_at_a_repeat_equals_the_full_output_cut_there(setup):
    from xasr.decoding.loops import cut_repeat

    n = _loop_ngram(setup.greedy)
    expected = [cut_repeat(g, n) for g in setup.greedy]
    with PassCounter(setup.llm.model) as full:
        generate_ids(setup.llm, setup.emb, setup.mask, BOUNDS)
    with PassCounter(setup.llm.model) as early:
        out = generate_ids(setup.llm, setup.emb, setup.mask, BOUNDS, repeat_ngram=n)
    assert out == expected
    assert early.rows < full.rows  # looping rows stopped, not run to their bounds
    # beams are not stopped early but cut the same way
    beams = generate_ids(setup.llm, setup.emb, setup.mask, BOUNDS, num_beams=2, repeat_ngram=n)
    assert all(len(b) == len(cut_repeat(b, n)) for b in beams)


@pytest.mark.parametrize("kind", KINDS)
def test_speculative_cut_at_a_repeat_equals_greedy_cut_there(setup, kind):
    n = _loop_ngram(setup.greedy)
    greedy = generate_ids(setup.llm, setup.emb, setup.mask, BOUNDS, repeat_ngram=n)
    drafts = _drafts(kind, setup.greedy, setup.llm.stop_id)  # drafts of the uncut output run past the cut
    stats = DecodeStats()
    assert speculative_generate(setup.llm, setup.emb, setup.mask, drafts, BOUNDS, stats=stats,
                                repeat_ngram=n) == greedy
    assert stats.output_tokens == sum(len(g) for g in greedy)
    out, _ = speculative_decode(setup.llm, setup.speech, drafts, BOUNDS, repeat_ngram=n)
    assert out == greedy
