"""The contextual acoustic head (frame stacking + transformer layers) and SpecAugment on a frozen
encoder's output: shapes, padding, masking only in training, determinism under a seed."""
import pytest
import torch

from xasr.data.dataset import Batch
from xasr.models.cformer import CFormerConfig
from xasr.models.conformer import ConformerConfig
from xasr.models.context import ContextConfig, ContextualHead
from xasr.models.model import EncoderSection, ModelConfig, XLLMSpeechModel


def _head(stride=2, layers=2):
    torch.manual_seed(0)
    return ContextualHead(ContextConfig(enabled=True, input_dim=12, stride=stride, dim=16, num_layers=layers,
                                        num_heads=2, ff_dim=32)).eval()


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_shapes_and_lengths(stride):
    head = _head(stride)
    h, lens = torch.randn(3, 10, 12), torch.tensor([10, 7, 1])
    y, y_lens = head(h, lens)
    n = -(-10 // stride)
    assert y.shape == (3, n, 16)
    assert y_lens.tolist() == [-(-k // stride) for k in (10, 7, 1)]
    for b, k in enumerate(y_lens.tolist()):
        assert torch.all(y[b, k:] == 0)  # nothing beyond a row's length
        assert y[b, :k].abs().sum() > 0


def test_a_row_gives_the_same_output_alone_and_padded_in_a_batch():
    head = _head(stride=2)
    h = torch.randn(2, 9, 12)
    lens = torch.tensor([9, 5])
    y, _ = head(h, lens)
    alone, n = head(h[1:2, :5], lens[1:2])
    assert int(n) == 3
    torch.testing.assert_close(y[1, :3], alone[0], rtol=1e-5, atol=1e-5)
    # padding frames do not reach the output: changing them changes nothing
    h2 = h.clone()
    h2[1, 5:] = 100.0
    torch.testing.assert_close(head(h2, lens)[0], y)


def test_gradients_reach_the_head_only_through_valid_frames():
    head = _head(stride=2).train()
    h = torch.randn(2, 8, 12, requires_grad=True)
    y, lens = head(h, torch.tensor([8, 4]))
    y.sum().backward()
    assert head.proj.weight.grad is not None and head.proj.weight.grad.abs().sum() > 0
    assert torch.all(h.grad[1, 4:] == 0)


def _model(**kw):
    torch.manual_seed(0)
    cfg = ModelConfig(encoder=EncoderSection(conformer=ConformerConfig(dim=32, num_layers=1, num_heads=2, ff_dim=64,
                                                                       conv_kernel=3)),
                      context=ContextConfig(enabled=True, stride=2, dim=24, num_layers=1, num_heads=2, ff_dim=48),
                      cformer=CFormerConfig(dim=32, num_layers=1, num_heads=2, ff_dim=64), vocab_size=6, **kw)
    return XLLMSpeechModel(cfg)


def _encoded_batch():
    torch.manual_seed(3)
    return Batch(torch.randn(2, 20, 32), torch.tensor([20, 13]), encoded=True, texts=["a", "b"],
                 tokens=torch.tensor([[1, 2, 3], [4, 5, -1]]), token_lens=torch.tensor([3, 2]))


def test_the_heads_read_the_contextual_head_at_its_frame_rate():
    model = _model()
    model.set_trainable(["context", "ctc", "cformer"])
    assert model.ctc.proj.in_features == 24 and model.cformer.input_proj.in_features == 24
    model.encoder.requires_grad_(False)  # the batch holds stored outputs of a frozen encoder
    model.eval()
    h, lens = model.encode_batch(_encoded_batch())
    assert h.shape == (2, 10, 24) and lens.tolist() == [10, 7]
    model.train()
    out = model(_encoded_batch(), stage=1)
    out["loss"].backward()
    assert model.context.proj.weight.grad is not None and model.context.proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("cif_alphas", ["predictor", "ctc"])
def test_every_trainable_parameter_gets_a_gradient(cif_alphas):
    # DDP (torchrun) stops at the second update if a trainable parameter is left out of the loss
    model = _model(cif_alphas=cif_alphas)
    model.set_trainable(["context", "ctc", "cformer"])
    model.encoder.requires_grad_(False)
    model.train()
    model(_encoded_batch(), stage=1)["loss"].backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(p.grad is not None for p in trainable.values()), \
        [n for n, p in trainable.items() if p.grad is None]
    predictor = {n for n in trainable if n.startswith("cformer.cif.")}
    assert bool(predictor) == (cif_alphas == "predictor")  # CIF weights from the CTC head: no predictor


def test_specaugment_only_in_training_and_repeatable_under_a_seed():
    model = _model(frozen_time_masks=2, frozen_time_mask_ratio=0.2, frozen_dim_masks=2, frozen_dim_mask_width=5)
    model.set_trainable(["context", "ctc", "cformer"])
    model.encoder.requires_grad_(False)
    batch = _encoded_batch()
    h, lens = batch.feats, batch.feat_lens
    model.train()
    torch.manual_seed(7)
    a = model._mask_frozen(h, lens)
    torch.manual_seed(7)
    b = model._mask_frozen(h, lens)
    assert torch.equal(a, b)
    torch.manual_seed(8)
    assert not torch.equal(model._mask_frozen(h, lens), a)
    zero = (a == 0) & (h != 0)
    assert zero.any() and torch.equal(a[~zero], h[~zero])
    for r in range(2):  # at most 2 time spans of 20% of the row's frames, 2 dim spans of 5
        n = int(lens[r])
        frames = zero[r, :n].all(dim=1).sum().item()
        dims = zero[r, :n].all(dim=0).sum().item()
        assert frames <= 2 * max(1, int(0.2 * n)) and dims <= 2 * 5
    # decoding (eval mode) never masks: encode_batch equals the head on the raw outputs
    model.eval()
    y, _ = model.encode_batch(batch)
    torch.testing.assert_close(y, model.context(h, lens)[0])


def test_starting_from_a_model_with_another_contextual_head_is_refused(tmp_path):
    from safetensors.torch import save_file

    from xasr.errors import XasrError
    from xasr.model_dir import init_from_dir

    model = _model()  # context: stride 2, dim 24, 1 layer
    d = tmp_path / "stage1"
    d.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "model.safetensors"))
    (d / "config.yaml").write_text("model:\n  context:\n    enabled: true\n    stride: 2\n    dim: 24\n"
                                   "    num_layers: 1\n    num_heads: 2\n    ff_dim: 48\n")
    loaded, _ = init_from_dir(model, str(d))
    assert any(k.startswith("context.") for k in loaded)
    # groups is set from the encoder when a model is built (a saved config keeps the default): not compared
    (d / "config.yaml").write_text("model:\n  context:\n    enabled: true\n    stride: 2\n    groups: 1\n")
    model.cfg.context.groups = 4
    init_from_dir(model, str(d))
    model.cfg.context.groups = 1
    (d / "config.yaml").write_text("model:\n  context:\n    enabled: true\n    stride: 3\n")
    with pytest.raises(XasrError, match="model.context.stride=3 there, 2 here"):
        init_from_dir(model, str(d))
    # a directory saved before the head existed had none: starting a model with one from it is refused
    (d / "config.yaml").write_text("model:\n  cif_alphas: predictor\n")
    with pytest.raises(XasrError, match="model.context.enabled=False there, True here"):
        init_from_dir(model, str(d))


def test_several_encoder_layers_concatenated_or_mixed_by_learned_weights():
    """groups=3 layers of 4 dims side by side: 'concat' projects all 12 dims, 'weighted' first sums
    the layers with softmax weights that start as the mean and learn."""
    torch.manual_seed(1)
    h, lens = torch.randn(2, 6, 12), torch.tensor([6, 4])
    cat = ContextualHead(ContextConfig(enabled=True, input_dim=12, groups=3, dim=8, num_layers=1, num_heads=2,
                                       ff_dim=16)).eval()
    assert cat.layer_weights is None and cat.proj.in_features == 2 * 12
    mix = ContextualHead(ContextConfig(enabled=True, input_dim=12, groups=3, layer_mix="weighted", dim=8,
                                       num_layers=1, num_heads=2, ff_dim=16)).eval()
    assert mix.proj.in_features == 2 * 4 and mix.layer_weights.shape == (3,)
    # at the start the weighted mix is the mean of the layers: the same as a one-group head on it
    one = ContextualHead(ContextConfig(enabled=True, input_dim=4, dim=8, num_layers=1, num_heads=2, ff_dim=16)).eval()
    one.load_state_dict({k: v for k, v in mix.state_dict().items() if k != "layer_weights"})
    torch.testing.assert_close(mix(h, lens)[0], one(h.view(2, 6, 3, 4).mean(dim=2), lens)[0])
    mix.train()
    y, y_lens = mix(h, lens)
    assert y.shape == (2, 3, 8) and y_lens.tolist() == [3, 2]
    y.sum().backward()
    assert mix.layer_weights.grad is not None and mix.layer_weights.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="layer_mix"):
        ContextualHead(ContextConfig(enabled=True, input_dim=12, groups=3, layer_mix="sum"))
    with pytest.raises(ValueError, match="groups=5"):
        ContextualHead(ContextConfig(enabled=True, input_dim=12, groups=5))
