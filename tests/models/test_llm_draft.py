"""A draft transcript in the LLM's prompt (model.llm_draft=ctc): the CTC head's greedy text after the
speech vectors, noisy in training only."""
import pytest
import torch

from tests.models.tiny_llm import make_tiny_llm
from xasr.data.dataset import Batch
from xasr.errors import XasrError
from xasr.models.cformer import CFormerConfig
from xasr.models.conformer import ConformerConfig
from xasr.models.llm import LLMConfig
from xasr.models.model import EncoderSection, ModelConfig, XLLMSpeechModel, corrupt_units

VOCAB = 8
LETTERS = "..._abcde"  # ids 0-2 are blank, sos/eos, unk; 3 is a space


class Units:
    """Stands in for the sentencepiece units: id i >= 3 is LETTERS[i]."""

    def decode(self, ids):
        return "".join(LETTERS[i] for i in ids).replace("_", " ")


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    return make_tiny_llm(tmp_path_factory.mktemp("llm"))


def _model(llm_dir, draft="ctc", noise=0.0, share=1.0):
    torch.manual_seed(0)
    cfg = ModelConfig(encoder=EncoderSection(conformer=ConformerConfig(dim=32, num_layers=1, num_heads=2, ff_dim=64,
                                                                       conv_kernel=3, spec_augment=False)),
                      cformer=CFormerConfig(dim=32, num_layers=1, num_heads=2, ff_dim=64), vocab_size=VOCAB,
                      use_llm=True, llm=LLMConfig(path=str(llm_dir)), llm_draft=draft, draft_noise=noise,
                      draft_share=share)
    model = XLLMSpeechModel(cfg)
    model.set_units(Units())
    return model


def _fixed_ctc(model, monkeypatch, paths):
    """The CTC head's output made to spell ``paths`` (one unit per frame, blank after them)."""
    def forward(h):
        logits = torch.full((h.shape[0], h.shape[1], VOCAB), -10.0)
        logits[..., model.ctc.blank_id] = 10.0
        for r, path in enumerate(paths):
            for t, v in enumerate(path):
                logits[r, t] = -10.0
                logits[r, t, v] = 10.0
        return logits.log_softmax(-1)
    monkeypatch.setattr(model.ctc, "forward", forward)


def _prompt_lengths(model, monkeypatch):
    """The CTC head made to spell "ab cdab" and "dcb"; the list that then collects, per stage-2
    forward, the length of each row the LLM reads (speech vectors plus draft)."""
    _fixed_ctc(model, monkeypatch, [[4, 5, 3, 6, 7, 4, 5], [7, 6, 5]])
    seen = []
    build = model.llm.build_inputs
    monkeypatch.setattr(model.llm, "build_inputs", lambda n, **kw: seen.append(list(n)) or build(n, **kw))
    return seen


def _batch():
    torch.manual_seed(1)
    return Batch(feats=torch.randn(2, 48, 80), feat_lens=torch.tensor([48, 40]), texts=["the cat", "hello"],
                 tokens=torch.tensor([[4, 5, 6], [6, 7, -1]]), token_lens=torch.tensor([3, 2]))


def test_corrupt_units_is_seeded_keeps_special_ids_out_and_does_nothing_at_zero():
    units = [3 + (i % 5) for i in range(3000)]
    assert corrupt_units(units, 0.0, VOCAB) == units
    torch.manual_seed(5)
    a = corrupt_units(units, 0.3, VOCAB)
    torch.manual_seed(5)
    assert corrupt_units(units, 0.3, VOCAB) == a
    assert a != units and all(3 <= u < VOCAB for u in a)
    # drops and insertions come in equal shares: the length stays about the same
    assert abs(len(a) - len(units)) < 0.05 * len(units)
    torch.manual_seed(6)
    b = corrupt_units(units, 1.0, VOCAB)  # every unit touched: no run of the input is left as it was
    assert b != units and corrupt_units([], 0.5, VOCAB) == []
    # substitutions only keep the length; deletions only shorten by about p
    assert len(corrupt_units(units, 0.3, VOCAB, shares=(1, 0, 0))) == len(units)
    dropped = len(units) - len(corrupt_units(units, 0.3, VOCAB, shares=(0, 1, 0)))
    assert 0.25 * len(units) < dropped < 0.35 * len(units)
    with pytest.raises(ValueError, match="shares"):
        corrupt_units(units, 0.3, VOCAB, shares=(1, -1, 0))


def test_rows_hold_the_speech_vectors_then_the_embedded_draft(llm_dir, monkeypatch):
    model = _model(llm_dir).eval()
    _fixed_ctc(model, monkeypatch, [[4, 0, 5, 5, 0, 3, 6], [7, 0, 0]])
    batch = _batch()
    h, h_lens = model.encode_batch(batch)
    drafts = model.ctc.greedy_decode(model.ctc(h), h_lens)
    assert drafts == [[4, 5, 3, 6], [7]]
    cf = model.cformer(h, h_lens, target_lens=batch.token_lens)
    rows = model.llm_rows(cf, drafts)
    speech = model.speech_embeddings(cf)
    for b, text in enumerate(["ab c", "d"]):
        n = int(cf.lens[b])
        ids = model.llm.tokenizer.encode(model.cfg.draft_prefix + text, add_special_tokens=False)
        assert rows[b].shape[0] == n + len(ids)
        assert torch.equal(rows[b][:n], speech[b, :n])
        assert torch.equal(rows[b][n:], model.llm.model.get_input_embeddings()(torch.tensor(ids)))
    # without drafts the rows are the vectors alone (prompt_draft=none), one row may go without one,
    # and a model trained without drafts refuses them
    assert [r.shape[0] for r in model.llm_rows(cf)] == cf.lens.tolist()
    mixed = model.llm_rows(cf, [None, drafts[1]])
    assert torch.equal(mixed[0], rows[0][:int(cf.lens[0])]) and torch.equal(mixed[1], rows[1])
    plain = _model(llm_dir, draft="none").eval()
    cf0 = plain.cformer(h, h_lens, target_lens=batch.token_lens)
    assert [r.shape[0] for r in plain.llm_rows(cf0)] == cf0.lens.tolist()
    with pytest.raises(XasrError, match="trained with one"):
        plain.llm_rows(cf0, drafts)
    with pytest.raises(ValueError, match="2 utterances"):
        model.llm_rows(cf, drafts[:1])
    model.units = None
    with pytest.raises(XasrError, match="units"):
        model.llm_rows(cf, drafts)


def test_stage2_reads_the_draft_and_corrupts_it_only_in_training(llm_dir, monkeypatch):
    model = _model(llm_dir, noise=0.9)
    seen = _prompt_lengths(model, monkeypatch)
    batch = _batch()
    model.eval()
    with torch.no_grad():
        first, again = model(batch, stage=2)["loss"], model(batch, stage=2)["loss"]
    assert torch.equal(first, again)  # evaluation: the draft as the head wrote it
    assert seen[0] == seen[1]
    cf = model.cformer(*model.encode_batch(batch), target_lens=batch.token_lens)
    draft_tokens = [len(model.llm.tokenizer.encode(model.cfg.draft_prefix + t, add_special_tokens=False))
                    for t in ("ab cdab", "dcb")]
    assert seen[0] == [n + d for n, d in zip(cf.lens.tolist(), draft_tokens)]
    model.train()
    losses = []
    for _ in range(2):
        torch.manual_seed(3)
        with torch.no_grad():
            losses.append(model(batch, stage=2)["loss"])
    assert torch.equal(losses[0], losses[1])  # training: noisy, and the seed repeats the noise
    assert seen[2] != seen[0]  # at 0.9 per unit the noisy drafts do not keep every length


def test_draft_share_leaves_some_training_rows_without_a_draft(llm_dir, monkeypatch):
    model = _model(llm_dir, share=0.5)
    seen = _prompt_lengths(model, monkeypatch)
    batch = _batch()
    cf = model.cformer(*model.encode_batch(batch), target_lens=batch.token_lens)
    speech_only = cf.lens.tolist()
    model.eval()
    with torch.no_grad():
        model(batch, stage=2)
    with_draft = seen[-1]
    assert all(w > n for w, n in zip(with_draft, speech_only))  # evaluation: every row has its draft
    model.train()
    rows = set()
    for seed in range(12):
        torch.manual_seed(seed)
        with torch.no_grad():
            model(batch, stage=2)
        for b, n in enumerate(seen[-1]):
            assert n in (speech_only[b], with_draft[b])
            rows.add((b, n == with_draft[b]))
    assert rows == {(0, True), (0, False), (1, True), (1, False)}
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="draft_share"):
            _model(llm_dir, share=bad)


def test_decoding_chooses_the_prompts_draft_per_method(llm_dir, monkeypatch):
    from xasr.decoding.methods import Search, options_for

    model = _model(llm_dir, share=0.5).eval()
    # a peaked head: the prefix search's best path is the greedy one
    _fixed_ctc(model, monkeypatch, [[4, 0, 5, 5, 0, 3, 6], [7, 0, 0]])
    batch = _batch()
    opts = options_for(model)
    assert (opts.prompt_draft, opts.rescore_draft) == ("ctc_greedy", "ctc_greedy")
    s = Search(model, batch, Units(), opts)
    assert s.prompt_drafts("llm_greedy") == s.ctc_units == [[4, 5, 3, 6], [7]]
    beam = Search(model, batch, Units(), opts.replace(prompt_draft="ctc_beam", rescore_draft="none"))
    assert beam.prompt_drafts("llm_greedy") == beam.ctc_beam_units == [list(nb[0][0]) for nb in beam.ctc_nbest]
    assert beam.ctc_beam_units == [[4, 5, 3, 6], [7]]
    assert beam.prompt_drafts("llm_rescore") is None
    rows, _, _ = beam.llm_inputs("llm_rescore")
    assert [r.shape[0] for r in rows] == beam.cf.lens.clamp(min=1).tolist()
    # a model trained without drafts never gets one, whatever the options say
    plain = _model(llm_dir, draft="none").eval()
    _fixed_ctc(plain, monkeypatch, [[4, 0, 5], [7, 0, 0]])
    assert Search(plain, batch, Units(), options_for(plain, prompt_draft="ctc_beam")).prompt_drafts("llm_greedy") is None
    with pytest.raises(XasrError, match="prompt_draft"):
        opts.replace(prompt_draft="cif")
