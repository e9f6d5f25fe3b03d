import pytest
import torch

from xasr.models.qformer import QFormer, QFormerConfig, grid_positions


def _qformer(**kw) -> QFormer:
    torch.manual_seed(0)
    cfg = dict(input_dim=12, dim=16, num_queries=5, num_layers=2, num_heads=4, ff_dim=32, dropout=0.0)
    cfg.update(kw)
    return QFormer(QFormerConfig(**cfg)).eval()


def test_output_is_one_vector_per_query():
    q = _qformer()
    x = torch.randn(3, 9, 12)
    out = q(x, torch.tensor([9, 4, 6]))
    assert out.shape == (3, 5, 16) and q.output_dim == 16 and q.num_queries == 5
    assert torch.isfinite(out).all()


def test_padding_positions_do_not_change_the_output():
    q = _qformer()
    short = torch.randn(1, 4, 12)
    alone = q(short, torch.tensor([4]), grids=[(2, 2)])
    for fill in (0.0, 1e3):  # whatever sits in the padding
        x = torch.full((2, 9, 12), fill)
        x[0, :4] = short[0]
        x[1] = torch.randn(9, 12)
        out = q(x, torch.tensor([4, 9]), grids=[(2, 2), (3, 3)])
        assert torch.allclose(out[0], alone[0], atol=1e-5)
    # a row's output depends on its own features only
    x2 = x.clone()
    x2[1] = torch.randn(9, 12)
    assert torch.allclose(q(x2, torch.tensor([4, 9]), grids=[(2, 2), (3, 3)])[0], alone[0], atol=1e-5)


def test_grid_positions_tell_where_a_feature_sits():
    x = torch.randn(1, 4, 12)
    swapped = x[:, [1, 0, 2, 3]]  # the same features, two cells exchanged
    lens = torch.tensor([4])
    with_pos = _qformer()
    assert not torch.allclose(with_pos(x, lens, grids=[(2, 2)]), with_pos(swapped, lens, grids=[(2, 2)]), atol=1e-4)
    # without positions, cross-attention cannot tell the cells apart
    without = _qformer(grid_positions=False)
    assert torch.allclose(without(x, lens, grids=[(2, 2)]), without(swapped, lens, grids=[(2, 2)]), atol=1e-5)
    table = grid_positions(2, 3, 16, torch.device("cpu"), torch.float32)
    assert table.shape == (6, 16)
    assert torch.equal(table[0, :8], table[2, :8]) and not torch.equal(table[0, 8:], table[2, 8:])  # same row
    assert torch.equal(table[0, 8:], table[3, 8:]) and not torch.equal(table[0, :8], table[3, :8])  # same column


def test_grid_larger_than_the_features_is_an_error():
    with pytest.raises(ValueError, match="3 x 3 grid does not fit 4"):
        _qformer()(torch.randn(1, 4, 12), torch.tensor([4]), grids=[(3, 3)])


def test_a_row_without_features_stays_finite():
    out = _qformer()(torch.randn(2, 3, 12), torch.tensor([3, 0]))
    assert torch.isfinite(out).all()


def test_gradients_reach_the_queries_and_the_projection():
    q = _qformer()
    q.train()
    q(torch.randn(2, 6, 12), torch.tensor([6, 3])).pow(2).sum().backward()
    assert q.queries.grad is not None and q.queries.grad.abs().sum() > 0
    assert q.input_proj.weight.grad.abs().sum() > 0


def test_sizes_must_be_set():
    with pytest.raises(ValueError, match="input_dim"):
        QFormer(QFormerConfig())
