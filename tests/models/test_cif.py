import math

import pytest
import torch
from torch import Tensor
from typing import Optional

from xasr.models.cif import CifCompressor, CifConfig, CifFired, cif_fire, lengths_to_mask


def one_hot_frames(t: int) -> torch.Tensor:
    return torch.eye(t).unsqueeze(0)  # (1, T, T): frame t is the unit vector e_t


def fire(alphas, threshold=1.0, **kw):
    a = torch.tensor([alphas], dtype=torch.float64)
    h = one_hot_frames(a.size(1)).double()
    return cif_fire(h, a, torch.tensor([a.size(1)]), threshold, **kw)


def test_boundary_frame_is_split():
    out = fire([0.4, 0.4, 0.4, 0.8])
    # token 1 fires at frame 3 with (0.4, 0.4, 0.2); the remaining 0.2 of frame 3 and frame 4's
    # 0.8 make token 2, which fires at frame 4
    assert out.fired_lens.tolist() == [2]
    expected = torch.tensor([[[0.4, 0.4, 0.2, 0.0], [0.0, 0.0, 0.2, 0.8]]], dtype=torch.float64)
    torch.testing.assert_close(out.fired, expected)
    torch.testing.assert_close(out.weights, expected)
    assert out.fire_frames.tolist() == [[2, 3]]


def test_fired_vector_is_weighted_sum_of_frames():
    h = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]]])
    out = cif_fire(h, torch.tensor([[0.6, 0.6, 0.8]]), torch.tensor([3]), 1.0)
    assert out.fired_lens.tolist() == [2]
    torch.testing.assert_close(out.fired[0, 0], 0.6 * h[0, 0] + 0.4 * h[0, 1])
    torch.testing.assert_close(out.fired[0, 1], 0.2 * h[0, 1] + 0.8 * h[0, 2])


def test_weight_above_threshold_fires_two_tokens_in_one_frame():
    out = fire([0.5, 1.7, 0.8])
    assert out.fired_lens.tolist() == [3]
    expected = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.2, 0.8]]], dtype=torch.float64)
    torch.testing.assert_close(out.fired, expected)
    assert out.fire_frames.tolist() == [[1, 1, 2]]


def test_firing_positions():
    out = fire([0.3, 0.3, 0.3, 0.3, 0.9, 0.1, 0.05, 1.0, 0.2])
    # sums: 1.2 at frame 4 (index 3), 0.2 + 0.9 = 1.1 at index 4, 0.1 + 0.1 + 0.05 + 1.0 at index 7
    assert out.fire_frames.tolist() == [[3, 4, 7]]
    assert out.fired_lens.tolist() == [3]


def test_threshold_other_than_one():
    out = fire([0.5, 0.5, 0.5, 0.5, 0.5], threshold=2.0)
    assert out.fired_lens.tolist() == [1] and out.fire_frames.tolist() == [[3]]
    torch.testing.assert_close(out.fired[0, 0], torch.tensor([0.5, 0.5, 0.5, 0.5, 0.0], dtype=torch.float64))


def test_round_off_within_eps_fires():
    out = fire([0.3, 0.3, 0.39999])  # 0.99999 is within eps = 1e-4 of the threshold
    assert out.fired_lens.tolist() == [1] and out.fire_frames.tolist() == [[2]]
    assert fire([0.3, 0.3, 0.39]).fired_lens.tolist() == [0]


def test_tail_handling_at_inference():
    # frame 2 completes token 1 with 0.3 and leaves 0.6 (fires as a tail) or 0.3 (does not)
    out = fire([0.7, 0.9], tail_threshold=0.5)
    assert out.fired_lens.tolist() == [2]
    torch.testing.assert_close(out.fired, torch.tensor([[[0.7, 0.3], [0.0, 0.6]]], dtype=torch.float64))
    assert out.fire_frames.tolist() == [[1, 1]]
    out = fire([0.7, 0.6], tail_threshold=0.5)
    assert out.fired_lens.tolist() == [1] and out.fired.shape == (1, 1, 2)
    assert fire([0.7, 0.9]).fired_lens.tolist() == [1]  # no tail threshold: no tail token


def test_target_lens_fix_round_off_and_count():
    # scaled to sum to 2 but short by 1e-6: the unfinished token still fires
    out = fire([0.5, 0.5, 0.5, 0.5 - 1e-6], target_lens=torch.tensor([2]))
    assert out.fired_lens.tolist() == [2] and out.fire_frames.tolist() == [[1, 3]]
    torch.testing.assert_close(out.fired[0, 1], torch.tensor([0.0, 0.0, 0.5, 0.5 - 1e-6], dtype=torch.float64))
    # more weight than targets: tokens beyond N are dropped; less: missing ones are zero vectors
    assert fire([1.0, 1.0, 1.0], target_lens=torch.tensor([2])).fired.shape == (1, 2, 3)
    out = fire([0.6, 0.6], target_lens=torch.tensor([3]))
    assert out.fired_lens.tolist() == [3]
    torch.testing.assert_close(out.fired[0], torch.tensor([[0.6, 0.4], [0.0, 0.2], [0.0, 0.0]], dtype=torch.float64))
    assert out.fire_frames.tolist() == [[1, 1, -1]]


def test_batch_with_padding_equals_single_items():
    g = torch.Generator().manual_seed(0)
    lens = torch.tensor([7, 4, 9])
    h = torch.randn(3, 9, 5, generator=g, dtype=torch.float64)
    alphas = torch.rand(3, 9, generator=g, dtype=torch.float64) * 0.9
    alphas[1, 4:] = 5.0  # garbage beyond the length must be ignored
    out = cif_fire(h, alphas, lens, 1.0, tail_threshold=0.5)
    for b, n in enumerate(lens.tolist()):
        one = cif_fire(h[b:b + 1, :n], alphas[b:b + 1, :n], lens[b:b + 1], 1.0, tail_threshold=0.5)
        k = one.fired_lens.item()
        assert out.fired_lens[b].item() == k
        torch.testing.assert_close(out.fired[b, :k], one.fired[0])
        torch.testing.assert_close(out.weights[b, :k, :n], one.weights[0])
        assert out.fire_frames[b, :k].tolist() == one.fire_frames[0].tolist()
        assert torch.all(out.fired[b, k:] == 0) and torch.all(out.fire_frames[b, k:] == -1)


def test_cif_fire_gradients_match_finite_differences():
    h = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    # values kept away from firing boundaries, where CIF is not differentiable
    alphas = torch.tensor([[0.45, 0.3, 0.5, 0.6, 0.35], [0.7, 1.6, 0.2, 0.1, 0.0]], dtype=torch.float64,
                          requires_grad=True)
    lens = torch.tensor([5, 4])
    assert torch.autograd.gradcheck(lambda hh, aa: cif_fire(hh, aa, lens, 1.0, tail_threshold=0.5).fired,
                                    (h, alphas))


def make_compressor(dim=6, **kw) -> CifCompressor:
    torch.manual_seed(0)
    return CifCompressor(CifConfig(input_dim=dim, dropout=0.0, **kw)).eval()


def test_scaled_alphas_sum_to_target_and_fire_exactly_n():
    cif = make_compressor()
    h = torch.randn(3, 20, 6)
    h_lens = torch.tensor([20, 13, 8])
    target = torch.tensor([7, 3, 5])
    out = cif(h, h_lens, target)
    assert out.fired_lens.tolist() == target.tolist() and out.fired.shape == (3, 7, 6)
    # the same fire by hand with scaled alphas: the token weights sum to N
    scaled = out.alphas * (target / out.alphas.sum(1))[:, None]
    torch.testing.assert_close(scaled.sum(1), target.float())
    manual = cif_fire(h, scaled, h_lens, 1.0, target_lens=target)
    torch.testing.assert_close(out.fired, manual.fired)
    for b, n in enumerate(target.tolist()):
        torch.testing.assert_close(manual.weights[b].sum(), torch.tensor(float(n)))
        assert torch.all(manual.weights[b].sum(1)[: n - 1] > 1 - 1e-4)  # every token but the last is full


def test_alphas_masked_beyond_lengths_and_padding_invariant():
    cif = make_compressor()
    h = torch.randn(2, 10, 6)
    h_lens = torch.tensor([10, 6])
    h_padded = h.clone()
    h_padded[1, 6:] = 100.0
    out = cif(h_padded, h_lens)
    assert torch.all(out.alphas[1, 6:] == 0) and torch.all(out.alphas[:, :6] > 0)
    single = cif(h[1:, :6], h_lens[1:])
    torch.testing.assert_close(out.alphas[1, :6], single.alphas[0])
    k = single.fired_lens.item()
    assert out.fired_lens[1].item() == k
    torch.testing.assert_close(out.fired[1, :k], single.fired[0])


def test_quantity_loss_on_known_alphas():
    cif = make_compressor()
    with torch.no_grad():  # alphas = sigmoid(bias) = 0.25 on every valid frame
        cif.weight_proj.weight.zero_()
        cif.weight_proj.bias.fill_(math.log(0.25 / 0.75))
    out = cif(torch.randn(2, 8, 6), torch.tensor([8, 4]), torch.tensor([3, 1]))
    # sums 2.0 and 1.0 against targets 3 and 1: (|2 - 3| + |1 - 1|) / 2
    torch.testing.assert_close(out.quantity_loss, torch.tensor(0.5))
    torch.testing.assert_close(out.alphas.sum(1), torch.tensor([2.0, 1.0]))
    assert cif(torch.randn(2, 8, 6), torch.tensor([8, 4])).quantity_loss is None


@pytest.mark.parametrize("with_targets", [True, False])
def test_gradients_reach_frames_and_alpha_predictor(with_targets):
    cif = make_compressor()
    cif.train()
    h = torch.randn(2, 12, 6, requires_grad=True)
    target = torch.tensor([4, 3]) if with_targets else None
    out = cif(h, torch.tensor([12, 9]), target)
    assert out.fired_lens.min() > 0
    loss = (out.fired * torch.randn_like(out.fired)).sum()  # CIF only, no quantity loss
    loss.backward()
    assert h.grad is not None and h.grad.abs().sum() > 0
    for name, p in cif.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_config_checks():
    with pytest.raises(ValueError, match="input_dim"):
        CifCompressor(CifConfig())
    with pytest.raises(ValueError, match="odd"):
        CifCompressor(CifConfig(input_dim=4, conv_kernel=4))


# ---------------------------------------------------------------------- reference walk
def walk_cif_fire(h: Tensor, alphas: Tensor, h_lens: Tensor, threshold: float = 1.0,
             tail_threshold: Optional[float] = None, target_lens: Optional[Tensor] = None,
             eps: float = 1e-4) -> CifFired:
    """The frame-by-frame integrate-and-fire walk, the reference for the loop-free cif_fire."""
    if threshold <= eps:
        raise ValueError(f"threshold must exceed eps ({threshold} <= {eps})")
    B, T, _ = h.shape
    valid = lengths_to_mask(h_lens, T)  # (B, T)
    alphas = torch.where(valid, alphas, torch.zeros_like(alphas))  # (B, T)

    # An upper bound on the tokens: each firing takes at least threshold - eps of weight.
    with torch.no_grad():
        total = alphas.sum(dim=1).max().item() if B > 0 and T > 0 else 0.0
    n_bound = int(total / (threshold - eps)) + 2
    if target_lens is not None and B > 0:
        n_bound = max(n_bound, int(target_lens.max().item()) + 1)

    acc = alphas.new_zeros(B)  # (B,) weight integrated by the token in progress
    count = torch.zeros(B, dtype=torch.long, device=h.device)  # (B,) tokens fired so far
    fire_frames = torch.full((B, n_bound), -1, dtype=torch.long, device=h.device)
    rows = torch.arange(B, device=h.device)
    # One entry per step of the loop: token slot (B,), share of the frame (B,), frame index.
    slots, parts, frames = [], [], []
    for t in range(T):
        rest = alphas[:, t]  # (B,) weight of frame t not yet given to a token
        active = valid[:, t]  # (B,) rows whose frame t still holds weight
        while True:
            need = threshold - acc  # (B,)
            fire = active & (rest >= need - eps)  # (B,)
            part = torch.where(fire, torch.minimum(need, rest), rest)  # (B,)
            part = torch.where(active, part, torch.zeros_like(part))
            slot = count.clamp(max=n_bound - 1)
            slots.append(slot)
            parts.append(part)
            frames.append(t)
            if not bool(fire.any()):
                acc = acc + part
                break
            fire_frames[rows[fire], slot[fire]] = t
            count = count + fire.long()
            acc = torch.where(fire, torch.zeros_like(acc), acc + part)
            rest = torch.where(fire, rest - part, torch.zeros_like(rest))
            active = fire

    if target_lens is not None:
        fired_lens = target_lens.to(device=h.device, dtype=torch.long)
        last = (h_lens - 1).clamp(min=0).to(torch.long)
        unfinished = count < fired_lens  # the token in progress (slot `count`) fires at the end
        fire_frames[rows[unfinished], count[unfinished].clamp(max=n_bound - 1)] = last[unfinished]
    elif tail_threshold is not None:
        tail = acc > tail_threshold
        last = (h_lens - 1).clamp(min=0).to(torch.long)
        fire_frames[rows[tail], count[tail].clamp(max=n_bound - 1)] = last[tail]
        fired_lens = count + tail.long()
    else:
        fired_lens = count

    n_out = int(fired_lens.max().item()) if B > 0 else 0
    weights = alphas.new_zeros(B, n_bound, T)
    if parts:
        steps = len(parts)
        index = (rows.repeat(steps), torch.stack(slots).flatten(),
                 torch.tensor(frames, device=h.device).repeat_interleave(B))
        weights = weights.index_put(index, torch.stack(parts).flatten(), accumulate=True)
    weights = weights[:, :n_out]  # (B, N, T)
    keep = lengths_to_mask(fired_lens, n_out)  # (B, N)
    weights = weights * keep[:, :, None].to(weights.dtype)
    fire_frames = torch.where(keep, fire_frames[:, :n_out], torch.full_like(fire_frames[:, :n_out], -1))
    fired = torch.bmm(weights, h)  # (B, N, D)
    return CifFired(fired, fired_lens, weights, fire_frames)



@pytest.mark.parametrize("mode", ["targets", "tail", "plain"])
def test_loop_free_cif_equals_the_frame_by_frame_walk(mode):
    g = torch.Generator().manual_seed({"targets": 1, "tail": 2, "plain": 3}[mode])
    for _ in range(20):
        B, T = 4, int(torch.randint(1, 40, (1,), generator=g))
        h = torch.randn(B, T, 6, generator=g, dtype=torch.float64)
        lens = torch.randint(1, T + 1, (B,), generator=g)
        alphas = torch.rand(B, T, generator=g, dtype=torch.float64) * 1.3
        kw = {}
        if mode == "targets":
            tl = torch.randint(0, T + 2, (B,), generator=g)
            total = (alphas * lengths_to_mask(lens, T)).sum(1)
            alphas = alphas * (tl / total.clamp(min=1e-6))[:, None]  # scaled as in training
            kw["target_lens"] = tl
        elif mode == "tail":
            kw["tail_threshold"] = 0.5
        a, b = cif_fire(h, alphas, lens, 1.0, **kw), walk_cif_fire(h, alphas, lens, 1.0, **kw)
        assert a.fired_lens.tolist() == b.fired_lens.tolist()
        torch.testing.assert_close(a.fired, b.fired)
        torch.testing.assert_close(a.weights, b.weights)
        assert a.fire_frames.tolist() == b.fire_frames.tolist()
