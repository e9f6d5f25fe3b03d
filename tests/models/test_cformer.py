import pytest
import torch
import torch.nn.functional as F

from xasr.models.cformer import CFormer, CFormerConfig
from xasr.models.cif import CifConfig
from xasr.models.conformer import ConformerConfig, ConformerEncoder
from xasr.models.ctc import CtcHead


def make_cformer(input_dim=24, vocab=11, **kw) -> CFormer:
    torch.manual_seed(0)
    cfg = CFormerConfig(input_dim=input_dim, vocab_size=vocab, dim=32, num_layers=2, num_heads=4, ff_dim=64,
                        dropout=0.0, cif=CifConfig(dropout=0.0), **kw)
    return CFormer(cfg).eval()


def test_shapes_with_targets():
    cf = make_cformer()
    target_lens = torch.tensor([5, 2, 3])
    out = cf(torch.randn(3, 30, 24), torch.tensor([30, 12, 20]), target_lens)
    assert out.lens.tolist() == [5, 2, 3]
    assert out.vectors.shape == (3, 5, 32) and out.logits.shape == (3, 5, 11) and out.alphas.shape == (3, 30)
    assert torch.all(out.vectors[1, 2:] == 0) and torch.all(out.alphas[1, 12:] == 0)
    assert out.quantity_loss is not None and out.quantity_loss.dim() == 0
    assert cf.output_dim == 32


def test_inference_counts_with_alphas_and_padding_invariance():
    cf = make_cformer()
    g = torch.Generator().manual_seed(2)
    h_lens = torch.tensor([30, 17, 9])
    h = torch.randn(3, 30, 24, generator=g)
    h[1, 17:] = 30.0
    out = cf(h, h_lens)
    assert out.quantity_loss is None
    for b, n in enumerate(h_lens.tolist()):
        one = cf(h[b:b + 1, :n], h_lens[b:b + 1])
        k = one.lens.item()
        assert out.lens[b].item() == k
        # the count follows the alphas: whole tokens plus a tail above 0.5
        total = one.alphas.sum().item()
        assert k in (int(total), int(total) + 1)
        torch.testing.assert_close(out.vectors[b, :k], one.vectors[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out.logits[b, :k], one.logits[0], atol=1e-5, rtol=1e-4)
        assert torch.all(out.vectors[b, k:] == 0)


def test_nothing_fired_gives_empty_finite_output():
    cf = make_cformer()
    with torch.no_grad():
        cf.cif.weight_proj.bias.fill_(-30.0)  # alphas ~ 0
    out = cf(torch.randn(2, 10, 24), torch.tensor([10, 6]))
    assert out.lens.tolist() == [0, 0] and out.vectors.shape == (2, 0, 32) and out.logits.shape == (2, 0, 11)
    assert cf.greedy_units(out.logits, out.lens) == [[], []]
    with torch.no_grad():
        cf.cif.weight_proj.weight.zero_()
        cf.cif.weight_proj.bias.fill_(0.0)  # alphas = 0.5: a single frame leaves 0.5, not above the tail threshold
    out = cf(torch.randn(2, 10, 24), torch.tensor([10, 1]))
    assert out.lens.tolist() == [5, 0]
    assert torch.isfinite(out.vectors).all() and out.lens[1] == 0 and torch.all(out.vectors[1] == 0)


def test_ce_loss_and_greedy_units():
    cf = make_cformer()
    target_lens = torch.tensor([3, 2])
    targets = torch.tensor([[4, 5, 6, 9], [7, 8, -1, -1]])  # padded beyond the lengths
    out = cf(torch.randn(2, 16, 24), torch.tensor([16, 10]), target_lens)
    loss = cf.ce_loss(out.logits, out.lens, targets, target_lens)
    flat = torch.cat([out.logits[0, :3], out.logits[1, :2]])
    torch.testing.assert_close(loss, F.cross_entropy(flat, torch.tensor([4, 5, 6, 7, 8])))
    with pytest.raises(ValueError, match="one fired vector per target unit"):
        cf.ce_loss(out.logits, out.lens, targets, torch.tensor([3, 1]))
    logits = torch.full((2, 3, 5), -1.0)
    logits[0, 0, 2] = logits[0, 1, 4] = logits[0, 2, 1] = logits[1, 0, 3] = 1.0
    assert CFormer.greedy_units(logits, torch.tensor([3, 1])) == [[2, 4, 1], [3]]


def test_config_checks():
    with pytest.raises(ValueError, match="must be set"):
        CFormer(CFormerConfig())
    with pytest.raises(ValueError, match="must be set"):
        CFormer(CFormerConfig(input_dim=8))
    with pytest.raises(ValueError, match="cif.input_dim"):
        CFormer(CFormerConfig(input_dim=8, vocab_size=5, dim=32, num_heads=4, cif=CifConfig(input_dim=16)))
    CFormer(CFormerConfig(input_dim=8, vocab_size=5, dim=32, num_heads=4, cif=CifConfig(input_dim=32)))


def test_gradients_reach_encoder_side():
    cf = make_cformer()
    cf.train()
    h = torch.randn(2, 20, 24, requires_grad=True)
    target_lens = torch.tensor([4, 3])
    out = cf(h, torch.tensor([20, 15]), target_lens)
    loss = cf.ce_loss(out.logits, out.lens, torch.randint(3, 11, (2, 4)), target_lens) + out.quantity_loss
    loss.backward()
    assert h.grad.abs().sum() > 0
    for name, p in cf.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_tiny_conformer_cformer_ctc_overfit():
    """Conformer + C-Former + CTC memorise 3 random fbank-like utterances in 250 steps (~6 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is as fast and steadier on a shared machine
    try:
        torch.manual_seed(0)
        dim, vocab = 32, 12
        enc = ConformerEncoder(ConformerConfig(dim=dim, num_layers=2, num_heads=2, ff_dim=2 * dim, conv_kernel=7,
                                               dropout=0.0, spec_augment=False))
        cf = CFormer(CFormerConfig(input_dim=dim, vocab_size=vocab, dim=dim, num_layers=1, num_heads=2,
                                   ff_dim=2 * dim, dropout=0.0, cif=CifConfig(dropout=0.0)))
        ctc = CtcHead(dim, vocab)
        g = torch.Generator().manual_seed(1)
        feat_lens = torch.tensor([120, 100, 90])
        feats = torch.randn(3, 120, 80, generator=g) * (torch.arange(120)[None, :, None] < feat_lens[:, None, None])
        target_lens = torch.tensor([6, 5, 4])
        targets = torch.zeros(3, 6, dtype=torch.long)
        for b, n in enumerate(target_lens.tolist()):
            targets[b, :n] = torch.randint(3, vocab, (n,), generator=g)
        expected = [targets[b, :n].tolist() for b, n in enumerate(target_lens.tolist())]

        steps = 250
        params = [*enc.parameters(), *cf.parameters(), *ctc.parameters()]
        opt = torch.optim.Adam(params, lr=4e-3)
        # constant rate, then a linear decay over the last 40% so the counts settle
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, max(0.05, (steps - i) / (0.4 * steps))))
        for _ in range(steps):
            h, h_lens = enc(feats, feat_lens)
            out = cf(h, h_lens, target_lens)
            ce = cf.ce_loss(out.logits, out.lens, targets, target_lens)
            ctc_loss = ctc.loss(ctc(h), h_lens, targets, target_lens)
            loss = ce + out.quantity_loss + 3.0 * ctc_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        assert ce.item() < 0.02 and ctc_loss.item() < 0.1 and out.quantity_loss.item() < 0.3

        enc.eval()
        cf.eval()
        with torch.no_grad():
            h, h_lens = enc(feats, feat_lens)
            out = cf(h, h_lens)  # inference: the alphas alone decide how many units fire
            assert out.lens.tolist() == target_lens.tolist()
            assert cf.greedy_units(out.logits, out.lens) == expected
            assert ctc.greedy_decode(ctc(h), h_lens) == expected
    finally:
        torch.set_num_threads(threads)


def test_given_alphas_replace_the_predictor():
    cf = make_cformer()
    h = torch.randn(2, 6, 24)
    lens = torch.tensor([6, 4])
    alphas = torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0, 9.0, 9.0]])  # spikes
    out = cf(h, lens, alphas=alphas)
    assert out.lens.tolist() == [3, 2]  # one vector per spike; weight beyond a length is ignored
    torch.testing.assert_close(out.alphas[1], torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 0.0]))
    # each vector comes from its spike frame: change a frame between spikes, nothing moves
    h2 = h.clone()
    h2[0, 0] += 5.0
    h2[0, 2] -= 3.0
    out2 = cf(h2, lens, alphas=alphas)
    torch.testing.assert_close(out.logits[1], out2.logits[1])
    cfx = make_cformer(cross_attention=False)
    torch.testing.assert_close(cfx(h, lens, alphas=alphas).logits[0], cfx(h2, lens, alphas=alphas).logits[0])


def test_cross_attention_sees_the_frames():
    cf = make_cformer(cross_attention=True)
    h = torch.randn(1, 6, 24)
    lens = torch.tensor([6])
    alphas = torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.0, 1.0]])
    h2 = h.clone()
    h2[0, 0] += 5.0  # a frame no vector integrates still reaches the vectors through cross attention
    assert not torch.allclose(cf(h, lens, alphas=alphas).logits, cf(h2, lens, alphas=alphas).logits)
