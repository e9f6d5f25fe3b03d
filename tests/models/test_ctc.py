import pytest
import torch
import torch.nn.functional as F

from xasr.models.ctc import CtcHead, ctc_greedy_decode


def path_log_probs(paths, vocab=6, peak=0.9):
    """(B, T, V) log-probs whose argmax follows each frame path (padding with blanks)."""
    T = max(len(p) for p in paths)
    probs = torch.full((len(paths), T, vocab), (1 - peak) / (vocab - 1))
    for b, p in enumerate(paths):
        for t in range(T):
            probs[b, t, p[t] if t < len(p) else 0] = peak
    return probs.log()


def test_greedy_decode_collapses_repeats_and_drops_blanks():
    lp = path_log_probs([[0, 3, 3, 0, 3, 4, 4, 0, 5], [2, 2, 2, 1, 0, 1, 5, 5, 5]])
    # second row: only the first 7 frames are valid
    assert ctc_greedy_decode(lp, torch.tensor([9, 7])) == [[3, 3, 4, 5], [2, 1, 1, 5]]
    assert ctc_greedy_decode(lp, torch.tensor([0, 1])) == [[], [2]]
    head = CtcHead(4, 6)
    assert head.greedy_decode(lp, torch.tensor([9, 9])) == [[3, 3, 4, 5], [2, 1, 1, 5]]


def test_head_outputs_log_probs():
    head = CtcHead(8, 5)
    lp = head(torch.randn(2, 7, 8))
    assert lp.shape == (2, 7, 5)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(2, 7))


def test_loss_is_sum_over_batch_per_target_unit():
    torch.manual_seed(0)
    head = CtcHead(8, 6)
    lp = head(torch.randn(2, 10, 8))
    lens, targets, target_lens = torch.tensor([10, 7]), torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([3, 2])
    expected = F.ctc_loss(lp.transpose(0, 1), targets, lens, target_lens, reduction="none").sum() / 5
    torch.testing.assert_close(head.loss(lp, lens, targets, target_lens), expected)


def test_loss_small_on_matching_path_and_finite_when_impossible():
    head = CtcHead(8, 6)
    lp = path_log_probs([[0, 3, 3, 0, 3, 4, 0]], peak=0.999)
    good = head.loss(lp, torch.tensor([7]), torch.tensor([[3, 3, 4]]), torch.tensor([3]))
    bad = head.loss(lp, torch.tensor([7]), torch.tensor([[5, 1, 2]]), torch.tensor([3]))
    assert good < 0.01 < bad
    # 4 units with a repeat need 5 frames; 2 frames cannot: zero_infinity gives 0, not inf
    impossible = head.loss(lp[:, :2], torch.tensor([2]), torch.tensor([[3, 3, 4, 5]]), torch.tensor([4]))
    assert torch.isfinite(impossible) and impossible == 0


def test_loss_gradient_reaches_head():
    head = CtcHead(8, 6)
    h = torch.randn(2, 10, 8, requires_grad=True)
    loss = head.loss(head(h), torch.tensor([10, 8]), torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([3, 2]))
    loss.backward()
    assert h.grad.abs().sum() > 0 and head.proj.weight.grad.abs().sum() > 0
    assert torch.all(h.grad[1, 8:] == 0)  # frames beyond the length get no gradient


def test_no_speech_prob_is_the_lowest_blank_posterior_within_lengths():
    from xasr.models.ctc import min_blank_prob

    p_blank = torch.tensor([[0.9, 0.5, 0.8, 0.7], [0.99, 0.95, 0.2, 0.1]])
    probs = torch.stack([p_blank, 1 - p_blank], dim=-1)  # (B, T, 2): blank is unit 0
    assert min_blank_prob(probs.log(), torch.tensor([4, 2])) == pytest.approx([0.5, 0.95])  # padding ignored
    assert min_blank_prob(probs.log(), torch.tensor([4, 0])) == pytest.approx([0.5, 1.0])  # no frame: nothing said
    assert min_blank_prob(torch.zeros(1, 0, 2), torch.tensor([0])) == [1.0]
    assert CtcHead(4, 2).no_speech_prob(probs.log(), torch.tensor([4, 4])) == pytest.approx([0.5, 0.1])


def test_a_head_with_classes_shares_each_class_logit_among_its_members():
    torch.manual_seed(0)
    classes = [0, 1, 1, 2, 1]  # units 1, 2 and 4 sound alike
    head = CtcHead(8, 5, classes=classes)
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias.zero_()
    h = torch.randn(2, 6, 8)
    lp = head(h)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, 6), atol=1e-5)
    assert torch.allclose(lp[..., 1], lp[..., 2]) and torch.allclose(lp[..., 1], lp[..., 4])
    assert not torch.allclose(lp[..., 1], lp[..., 3])
    # a target of unit 2 trains the class logit that units 1 and 4 read too
    loss = head.loss(head(h), torch.tensor([6, 6]), torch.tensor([[2], [2]]), torch.tensor([1, 1]))
    loss.backward()
    assert head.proj.class_proj.weight.grad[1].abs().sum() > 0
    with pytest.raises(ValueError, match="5 class ids"):
        CtcHead(8, 5, classes=[0, 1, 2])
