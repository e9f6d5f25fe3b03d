import pytest
import torch

from tests.models.tiny_llm import make_tiny_llm
from xasr.decoding.generate import generate_ids
from xasr.models.llm import IGNORE_ID, FrozenLLM, LLMConfig


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    d = make_tiny_llm(tmp_path_factory.mktemp("llm") / "tiny")
    return FrozenLLM(LLMConfig(path=str(d)))


def test_llm_is_frozen_and_has_no_trainable_parameters(llm):
    assert not any(p.requires_grad for p in llm.parameters())
    assert not llm.model.training


def test_prompt_uses_the_chat_template_with_one_speech_placeholder(llm):
    text = llm.prompt_text()
    assert text.startswith("<|im_start|>user\n<speech>\nTranscribe the speech.<|im_end|>\n")
    assert text.endswith("<|im_start|>assistant\n")
    assert llm.prompt_ids().count(llm.speech_id) == 1
    assert llm.end_text == "<|im_end|>"


def test_training_inputs_mask_everything_but_the_transcript(llm):
    batch = llm.build_inputs([3, 5], targets=["hello world", "the cat"])
    ids, att, lab = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.shape == lab.shape == att.shape
    for b, (n, text) in enumerate([(3, "hello world"), (5, "the cat")]):
        assert int((ids[b] == llm.speech_id).sum()) == n
        labelled = lab[b][lab[b] != IGNORE_ID].tolist()
        assert labelled == llm.target_ids(text)
        assert llm.tokenizer.decode(labelled) == text + "<|im_end|>"
        # right padding: the real tokens come first, labels never on padding or the prompt
        n_real = int(att[b].sum())
        assert att[b, :n_real].all() and not att[b, n_real:].any()
        first_label = int((lab[b] != IGNORE_ID).nonzero()[0])
        assert (ids[b, :first_label] != llm.pad_id).all() or b == 0
        assert (ids[b, first_label:n_real] == torch.tensor(llm.target_ids(text))).all()


def test_generation_inputs_are_left_padded_prompts_only(llm):
    gen = llm.build_inputs([3, 5])
    assert gen["labels"] is None
    train = llm.build_inputs([3, 5], targets=["a", "b"])
    # the same prompt tokens as training, before the transcript: one prompt code for both
    for b in range(2):
        g = gen["input_ids"][b][gen["attention_mask"][b].bool()].tolist()
        t = train["input_ids"][b][train["attention_mask"][b].bool()].tolist()
        assert t[:len(g)] == g
    assert gen["attention_mask"][0, 0] == 0 and gen["attention_mask"][:, -1].all()


def test_embed_scatters_vectors_in_order_and_checks_counts(llm):
    batch = llm.build_inputs([2, 3])
    speech = torch.arange(5 * llm.embed_dim, dtype=torch.float32).reshape(5, llm.embed_dim)
    emb = llm.embed(batch["input_ids"], speech)
    pos = (batch["input_ids"] == llm.speech_id).nonzero().tolist()
    assert [emb[b, t, 0].item() for b, t in pos] == [speech[i, 0].item() for i in range(5)]
    other = batch["input_ids"][0, -1]
    assert torch.equal(emb[0, -1], llm.model.get_input_embeddings().weight[other])
    with pytest.raises(ValueError, match=r"speech placeholders \(5\) and speech vectors \(4\)"):
        llm.embed(batch["input_ids"], speech[:4])


def test_loss_flows_to_speech_vectors_only_through_labels(llm):
    batch = llm.build_inputs([2, 3], targets=["hello world", "the cat sat"])
    speech = torch.randn(5, llm.embed_dim, requires_grad=True)
    emb = llm.embed(batch["input_ids"], speech)
    loss, n, correct = llm.loss(emb, batch["attention_mask"], batch["labels"])
    assert n == int((batch["labels"] != IGNORE_ID).sum()) and 0 <= correct <= n
    # equals full-logit cross-entropy
    full = llm.model(inputs_embeds=emb, attention_mask=batch["attention_mask"]).logits
    ref = torch.nn.functional.cross_entropy(full[:, :-1].reshape(-1, full.shape[-1]),
                                            batch["labels"][:, 1:].reshape(-1), ignore_index=IGNORE_ID,
                                            reduction="sum")
    assert torch.allclose(loss, ref, atol=1e-4)
    loss.backward()
    assert speech.grad is not None and speech.grad.abs().sum() > 0
    assert all(p.grad is None for p in llm.parameters())


def test_generate_respects_each_rows_bound(llm):
    gen = llm.build_inputs([2, 3])
    emb = llm.embed(gen["input_ids"], torch.randn(5, llm.embed_dim))
    for beams in (1, 2):
        rows = generate_ids(llm, emb, gen["attention_mask"], max_new_tokens=[1, 4], num_beams=beams)
        assert len(rows) == 2
        assert len(rows[0]) <= 1 and len(rows[1]) <= 4
        assert llm.stop_id not in rows[0] + rows[1]
    # greedy equals a hand-rolled argmax loop over full forward passes
    rows = generate_ids(llm, emb[:1, 1:], gen["attention_mask"][:1, 1:], max_new_tokens=[5])
    seq = emb[:1, 1:]
    mine = []
    for _ in range(5):
        nxt = int(llm.model(inputs_embeds=seq).logits[0, -1].argmax())
        if nxt == llm.stop_id:
            break
        mine.append(nxt)
        seq = torch.cat([seq, llm.model.get_input_embeddings().weight[nxt][None, None]], dim=1)
    assert rows[0] == mine


def test_base_model_without_template(tmp_path):
    llm = FrozenLLM(LLMConfig(path=str(make_tiny_llm(tmp_path / "base", chat_template=False))))
    assert llm.prompt_text() == "<s><speech>\nTranscribe the speech.\nTranscript:"
    assert llm.end_text == "<s>"


def test_lora_trains_only_adapters(tmp_path):
    from xasr.models.llm import LoraSettings

    llm = FrozenLLM(LLMConfig(path=str(make_tiny_llm(tmp_path / "l")), lora=LoraSettings(enabled=True, r=4)))
    names = [n for n, p in llm.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)


def test_missing_directory_is_a_clear_error(tmp_path):
    from xasr.errors import XasrError
    with pytest.raises(XasrError, match="does not exist"):
        FrozenLLM(LLMConfig(path=str(tmp_path / "nope")))
