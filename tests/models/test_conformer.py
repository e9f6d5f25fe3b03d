import pytest
import torch

from xasr.models.conformer import ConformerConfig, ConformerEncoder, apply_rotary, RotaryEmbedding, spec_augment
from xasr.errors import XasrError
from xasr.models.encoder_registry import ENCODERS


def tiny(**kw) -> ConformerConfig:
    base = dict(input_dim=80, dim=32, num_layers=2, num_heads=4, ff_dim=64, conv_kernel=7, dropout=0.0)
    base.update(kw)
    return ConformerConfig(**base)


def make_encoder(**kw) -> ConformerEncoder:
    torch.manual_seed(0)
    return ConformerEncoder(tiny(**kw)).eval()


def conv_out(n: int, kernel: int, stride: int) -> int:
    return (n - kernel) // stride + 1


@pytest.mark.parametrize("factor,expected", [
    # T -> T' by hand: 4: two (3, 2) convs; 6: (3, 2) then (5, 3); 8: three (3, 2) convs
    (4, lambda t: conv_out(conv_out(t, 3, 2), 3, 2)),
    (6, lambda t: conv_out(conv_out(t, 3, 2), 5, 3)),
    (8, lambda t: conv_out(conv_out(conv_out(t, 3, 2), 3, 2), 3, 2)),
])
def test_subsampled_lengths_and_shapes(factor, expected):
    enc = make_encoder(subsampling=factor)
    lens = torch.tensor([100, 73, 40, 31])
    h, h_lens = enc(torch.randn(4, 100, 80), lens)
    assert h_lens.tolist() == [expected(n) for n in lens.tolist()]
    assert h.shape == (4, h_lens.max().item(), 32) and enc.output_dim == 32
    assert torch.all(h[1, h_lens[1]:] == 0) and torch.all(h[3, h_lens[3]:] == 0)
    assert {4: 24, 6: 15, 8: 11}[factor] == h_lens[0].item()  # 100 frames of 10 ms


def test_padding_does_not_change_valid_outputs():
    enc = make_encoder()
    g = torch.Generator().manual_seed(1)
    lens = torch.tensor([90, 57, 23])
    feats = torch.randn(3, 90, 80, generator=g)
    feats[1, 57:] = 50.0  # padding with large junk
    feats[2, 23:] = -50.0
    h, h_lens = enc(feats, lens)
    for b, n in enumerate(lens.tolist()):
        one, one_lens = enc(feats[b:b + 1, :n], lens[b:b + 1])
        assert one_lens.item() == h_lens[b].item()
        torch.testing.assert_close(h[b, : one_lens.item()], one[0], atol=1e-5, rtol=1e-4)


def test_spec_augment_only_in_training():
    torch.manual_seed(0)
    cfg = tiny(spec_augment=True)
    enc = ConformerEncoder(cfg)
    feats, lens = torch.randn(2, 60, 80), torch.tensor([60, 45])
    enc.eval()
    a, _ = enc(feats, lens)
    b, _ = enc(feats, lens)
    torch.testing.assert_close(a, b)
    enc.train()  # dropout is 0: any change comes from the masks
    torch.manual_seed(3)
    c, _ = enc(feats, lens)
    assert not torch.allclose(a, c)
    enc.cfg.spec_augment = False
    d, _ = enc(feats, lens)
    torch.testing.assert_close(a, d)


def test_spec_augment_masks():
    torch.manual_seed(0)
    cfg = tiny(num_freq_masks=1, freq_mask_width=10, num_time_masks=1, time_mask_width=8, time_mask_ratio=0.2)
    feats = torch.randn(4, 50, 80) + 3.0
    lens = torch.tensor([50, 50, 40, 30])
    out = spec_augment(feats, lens, cfg)
    changed = out != feats
    for b in range(4):
        bins = changed[b].all(dim=0).nonzero().flatten()  # fully masked frequency bins
        assert len(bins) <= 10 and (len(bins) == 0 or bins.max() - bins.min() + 1 == len(bins))
        frames = changed[b].all(dim=1).nonzero().flatten()  # fully masked frames
        assert len(frames) <= min(8, int(0.2 * lens[b])) and (len(frames) == 0 or frames.max() < lens[b])
    assert changed.any()


def test_rotary_scores_depend_on_relative_offset_only():
    rot = RotaryEmbedding(8)
    cos, sin = rot(20, torch.float32)
    q, k = torch.randn(8), torch.randn(8)
    qs = apply_rotary(q.expand(1, 1, 20, 8), cos, sin)[0, 0]
    ks = apply_rotary(k.expand(1, 1, 20, 8), cos, sin)[0, 0]
    torch.testing.assert_close(qs[5] @ ks[2], qs[15] @ ks[12])
    torch.testing.assert_close(qs[0] @ ks[0], q @ k)


def test_registry_and_gradients():
    assert ENCODERS.get("conformer") is ConformerEncoder
    assert ConformerEncoder.pretrained_dir is None and not ConformerEncoder.frozen  # it trains with the model
    with pytest.raises(XasrError, match="only a frozen pretrained encoder can be cached"):
        ConformerEncoder.cache_identity(tiny())
    enc = ConformerEncoder(tiny(dropout=0.1)).train()
    feats = torch.randn(2, 40, 80, requires_grad=True)
    h, h_lens = enc(feats, torch.tensor([40, 30]))
    h.sum().backward()
    assert feats.grad.abs().sum() > 0
    assert all(p.grad is not None for p in enc.parameters())


def test_too_short_input_and_bad_config():
    enc = make_encoder()
    with pytest.raises(ValueError, match="at least 7"):
        enc(torch.randn(1, 6, 80), torch.tensor([6]))
    h, h_lens = enc(torch.randn(2, 20, 80), torch.tensor([20, 3]))  # one item too short: length 0
    assert h_lens.tolist() == [4, 0] and torch.isfinite(h).all() and torch.all(h[1] == 0)
    with pytest.raises(ValueError, match="subsampling"):
        ConformerEncoder(tiny(subsampling=5))
    with pytest.raises(ValueError, match="odd"):
        ConformerEncoder(tiny(conv_kernel=8))
