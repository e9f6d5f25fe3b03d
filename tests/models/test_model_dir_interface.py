"""Starting a stage from a model directory: the C-Former, contextual head and CIF must be built as
there (their weights would load but compute something else), while training-only settings such
as dropout may change."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from xasr.errors import XasrError
from xasr.models.model import ModelConfig
from xasr.model_dir import CONFIG, check_same_interface


def _saved(tmp_path, cfg: ModelConfig):
    OmegaConf.save(OmegaConf.create({"model": OmegaConf.to_container(OmegaConf.structured(cfg))}),
                   tmp_path / CONFIG)
    return tmp_path


def test_dropout_may_change_at_every_level(tmp_path):
    then = ModelConfig()
    then.context.dropout, then.cformer.dropout, then.cformer.cif.dropout = 0.0, 0.0, 0.0
    check_same_interface(ModelConfig(), _saved(tmp_path, then))  # no error


@pytest.mark.parametrize("change, named", [
    (lambda c: setattr(c.cformer.cif, "threshold", 0.9), "model.cformer.cif.threshold=0.9 there, 1.0 here"),
    (lambda c: setattr(c.cformer, "num_layers", c.cformer.num_layers + 1), "model.cformer.num_layers="),
    (lambda c: setattr(c.context, "stride", 3), "model.context.stride=3 there"),
    (lambda c: (setattr(c.encoder, "name", "whisper"), setattr(c.encoder.whisper, "train_top", 1)),
     "model.encoder.whisper.train_top=1 there, 0 here"),
])
def test_a_different_interface_is_refused_and_named(tmp_path, change, named):
    then = ModelConfig()
    change(then)
    with pytest.raises(XasrError, match="has another encoder top, C-Former") as e:
        check_same_interface(ModelConfig(), _saved(tmp_path, then))
    assert named in str(e.value)


def test_the_same_encoder_top_is_accepted(tmp_path):
    def top(cfg: ModelConfig) -> ModelConfig:
        cfg.encoder.name, cfg.encoder.whisper.train_top = "whisper", 2
        return cfg

    check_same_interface(top(ModelConfig()), _saved(tmp_path, top(ModelConfig())))  # no error
