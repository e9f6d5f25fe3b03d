"""CIF weights from the CTC head (model.cif_alphas=ctc): one token per token of the CTC path."""
import torch

from xasr.models.cformer import CFormerConfig
from xasr.models.conformer import ConformerConfig
from xasr.models.model import EncoderSection, ModelConfig, XLLMSpeechModel


def _model():
    torch.manual_seed(0)
    cfg = ModelConfig(encoder=EncoderSection(conformer=ConformerConfig(dim=32, num_layers=1, num_heads=2, ff_dim=64,
                                                                       conv_kernel=3)),
                      cformer=CFormerConfig(dim=32, num_layers=1, num_heads=2, ff_dim=64), vocab_size=6,
                      cif_alphas="ctc")
    return XLLMSpeechModel(cfg).eval()


def test_weights_sum_to_the_ctc_paths_token_count(monkeypatch):
    model = _model()
    blank = model.ctc.blank_id
    a, b, c = [v for v in range(6) if v != blank][:3]
    # row 0: a a - b b b - - c -  (3 tokens on 6 non-blank frames); row 1: a - a  + padding (2 tokens)
    paths = [[a, a, blank, b, b, b, blank, blank, c, blank], [a, blank, a] + [blank] * 7]
    lens = torch.tensor([10, 3])
    logits = torch.full((2, 10, 6), -10.0)
    for r, path in enumerate(paths):
        for t, v in enumerate(path):
            logits[r, t, v] = 10.0
    log_probs = logits.log_softmax(-1)
    monkeypatch.setattr(model.ctc, "forward", lambda h: log_probs)
    alphas = model.cif_alphas(torch.zeros(2, 10, 4), lens)
    assert torch.allclose(alphas.sum(1), torch.tensor([3.0, 2.0]), atol=1e-4)
    assert torch.all(alphas[1, 3:] == 0)  # nothing beyond the row's length
    nonblank = torch.tensor(paths[0]) != blank
    assert torch.all(alphas[0, ~nonblank] < 1e-3) and torch.allclose(alphas[0, nonblank], torch.full((6,), 0.5), atol=1e-3)
    # the CIF then fires as many vectors as the CTC path has tokens
    cf = model.cformer(torch.randn(2, 10, 32), lens, alphas=alphas)  # 32: the encoder's width
    assert cf.lens.tolist() == [3, 2]


def test_starting_from_a_model_with_other_cif_weights_is_refused(tmp_path):
    import pytest
    from safetensors.torch import save_file

    from xasr.errors import XasrError
    from xasr.model_dir import init_from_dir

    model = _model()  # cif_alphas=ctc
    d = tmp_path / "stage1"
    d.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "model.safetensors"))
    (d / "config.yaml").write_text("model:\n  cif_alphas: ctc\n  cformer:\n    num_layers: 1\n")
    loaded, _ = init_from_dir(model, str(d))  # the same settings: fine
    assert any(k.startswith("cformer.") for k in loaded)
    (d / "config.yaml").write_text("model:\n  cif_alphas: predictor\n  cformer:\n    num_layers: 3\n")
    with pytest.raises(XasrError, match="model.cif_alphas=predictor there, ctc here; model.cformer.num_layers=3"):
        init_from_dir(model, str(d))
