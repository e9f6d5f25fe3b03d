"""Fitting the S-Adapter to the LLM's embeddings of the units (xasr.models.adapter_init)."""
import pytest
import torch

from tests.models.tiny_llm import make_tiny_llm
from xasr.models.adapter import Adapter, AdapterConfig
from xasr.models.adapter_init import fit_adapter, nearest_unit_accuracy, unit_targets


@pytest.fixture(scope="module")
def llm_and_units(tmp_path_factory):
    import sentencepiece as spm

    from xasr.models.llm import FrozenLLM, LLMConfig

    d = tmp_path_factory.mktemp("align")
    llm = FrozenLLM(LLMConfig(path=str(make_tiny_llm(d / "llm"))))
    text = d / "text.txt"
    text.write_text("\n".join(["the cat sat on the mat", "hello world", "one two three four five"] * 20))
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(d / "unit"), vocab_size=30,
                                   model_type="unigram", character_coverage=1.0, user_defined_symbols=["<sil>"])
    return llm, spm.SentencePieceProcessor(model_file=str(d / "unit.model"))


def test_unit_targets_are_mean_embeddings_of_the_spelling_tokens(llm_and_units):
    llm, units = llm_and_units
    t = unit_targets(units, llm)
    table = llm.model.get_input_embeddings()
    emb = table(torch.arange(table.weight.shape[0])).detach().float()
    assert t.shape == (units.get_piece_size(), emb.shape[1])
    checked = 0
    for i in range(units.get_piece_size()):
        piece = units.id_to_piece(i)
        if units.is_control(i) or units.is_unknown(i) or piece == "<sil>":
            assert torch.all(t[i] == 0), piece  # special units get no target
            continue
        ids = llm.tokenizer.encode(piece.replace("\u2581", " "), add_special_tokens=False)
        assert torch.allclose(t[i], emb[ids].mean(0)), piece
        checked += 1
    assert checked > 10


def test_unit_targets_are_what_the_embedding_layer_outputs(llm_and_units, monkeypatch):
    """Gemma's embedding layer scales its table by sqrt(D): targets must be the layer's output."""
    llm, units = llm_and_units
    plain = unit_targets(units, llm)
    table = llm.model.get_input_embeddings()

    class Scaled(torch.nn.Module):
        weight = table.weight

        def forward(self, ids):
            return table(ids) * 3.0

    monkeypatch.setattr(llm.model, "get_input_embeddings", lambda: Scaled())
    assert torch.allclose(unit_targets(units, llm), 3.0 * plain)


def test_nearest_unit_accuracy_counts_hits():
    targets = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # unit 0 has no target
    out = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.8, 0.0]])
    assert nearest_unit_accuracy(out, torch.tensor([1, 2, 2]), targets) == pytest.approx(2 / 3)


def test_fit_maps_each_units_vectors_to_its_target():
    torch.manual_seed(0)
    V, dim, D = 12, 16, 24
    centres = torch.randn(V, dim)
    targets = torch.randn(V, D)
    targets[0] = 0  # a unit without a target: its vectors are left out of the fit
    y = torch.randint(0, V, (3000,))
    x = centres[y] + 0.1 * torch.randn(3000, dim)
    vy = torch.randint(1, V, (300,))
    vx = centres[vy] + 0.1 * torch.randn(300, dim)
    adapter = Adapter(AdapterConfig(input_dim=dim, output_dim=D, hidden_dim=32, dropout=0.0))
    stats = fit_adapter(adapter, x, y, targets, valid=(vx, vy), steps=400, lr=5e-3, batch_size=128)
    assert stats.vectors == int((y != 0).sum()) and stats.valid_vectors == 300
    assert stats.squared_error < 0.1 * stats.target_variance
    assert stats.train_nearest_unit_accuracy > 0.95 and stats.valid_nearest_unit_accuracy > 0.95


def test_fit_refuses_units_without_targets():
    with pytest.raises(ValueError, match="none of the units"):
        fit_adapter(torch.nn.Linear(4, 4), torch.randn(5, 4), torch.zeros(5, dtype=torch.long),
                    torch.zeros(3, 4), steps=2)


def test_posterior_mix_adds_the_posterior_weighted_unit_table():
    torch.manual_seed(0)
    V, dim, D = 6, 8, 10
    adapter = Adapter(AdapterConfig(input_dim=dim, output_dim=D, hidden_dim=16, dropout=0.0,
                                    posterior_mix=True, vocab_size=V))
    with torch.no_grad():
        adapter.unit_table.copy_(torch.randn(V, D))
    x = torch.randn(2, 3, dim)
    post = torch.randn(2, 3, V).softmax(-1)
    out = adapter(x, post)
    assert out.shape == (2, 3, D)
    assert torch.allclose(out, adapter.mlp(x) + torch.einsum("bnv,vd->bnd", post, adapter.unit_table), atol=1e-6)
    # a one-hot posterior adds that unit's row
    one_hot = torch.nn.functional.one_hot(torch.tensor([[2, 0, 5]]), V).float()
    assert torch.allclose(adapter(x[:1], one_hot) - adapter.mlp(x[:1]), adapter.unit_table[[2, 0, 5]][None], atol=1e-6)
    with pytest.raises(ValueError, match="pass them"):
        adapter(x)
    with pytest.raises(ValueError, match="vocabulary size"):
        Adapter(AdapterConfig(input_dim=dim, output_dim=D, posterior_mix=True))
    # the table trains with the adapter (it is one of its parameters)
    assert any(p is adapter.unit_table for p in adapter.parameters())


def test_fit_with_a_base_fits_the_mlp_to_the_remainder_and_keeps_the_table():
    torch.manual_seed(0)
    V, dim, D = 12, 16, 24
    centres = torch.randn(V, dim)
    targets = torch.randn(V, D)
    y = torch.randint(0, V, (3000,))
    x = centres[y] + 0.1 * torch.randn(3000, dim)
    # a head that is right half of the time: its posterior mass on the right unit is 0.5
    post = torch.full((3000, V), 0.5 / (V - 1))
    post[torch.arange(3000), y] = 0.5
    adapter = Adapter(AdapterConfig(input_dim=dim, output_dim=D, hidden_dim=32, dropout=0.0,
                                    posterior_mix=True, vocab_size=V))
    with torch.no_grad():
        adapter.unit_table.copy_(targets)
    table_before = adapter.unit_table.detach().clone()
    base = post @ targets
    vy = torch.randint(0, V, (300,))
    vpost = torch.full((300, V), 1.0 / V)
    valid = (centres[vy] + 0.1 * torch.randn(300, dim), vy, vpost @ targets)
    stats = fit_adapter(adapter, x, y, targets, valid=valid, steps=400, lr=5e-3, batch_size=128, base=base)
    assert torch.equal(adapter.unit_table, table_before)
    assert stats.squared_error < 0.1 * stats.target_variance
    assert stats.train_nearest_unit_accuracy > 0.95 and stats.valid_nearest_unit_accuracy > 0.95
    # the whole adapter (MLP + posterior-weighted table) gives the fitted outputs
    with torch.no_grad():
        assert torch.allclose(adapter(x[:5, None], post[:5, None])[:, 0], adapter.mlp(x[:5]) + base[:5], atol=1e-5)
