"""A model whose CTC head ties homophones (model.unit_classes) keeps its own copy of the class
list, gives the same log-probabilities once loaded, and cannot start a stage from a head of the
other kind."""
from __future__ import annotations

import json
import shutil

import pytest
import sentencepiece as spm
import torch

from tests.transcribe.conftest import make_model_dir, make_units
from xasr.errors import XasrError
from xasr.models.model import UNIT_CLASSES, XLLMSpeechModel, init_from_dir, load_model_dir


@pytest.fixture(scope="module")
def classes_model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("classes_model")
    units = make_units(root / "lang")
    n = spm.SentencePieceProcessor(model_file=str(units)).get_piece_size()
    classes = [i if i < 5 else 5 + (i % 3) for i in range(n)]  # a few large classes
    (root / "elsewhere").mkdir()
    (root / "elsewhere" / "unit_classes.json").write_text(json.dumps(classes))
    model_dir = make_model_dir(root / "model", units, unit_classes=root / "elsewhere" / "unit_classes.json")
    shutil.rmtree(root / "elsewhere")  # the directory must not need the original file
    return model_dir, classes


def test_the_classes_travel_with_the_model_and_give_the_same_log_probs(classes_model_dir):
    model_dir, classes = classes_model_dir
    assert json.loads((model_dir / UNIT_CLASSES).read_text()) == classes
    model, cfg, units = load_model_dir(str(model_dir))
    assert model.ctc.proj.classes.tolist() == classes and model.cformer.head.class_proj is None and model.cfg.unit_classes == str(model_dir / UNIT_CLASSES)
    again, _, _ = load_model_dir(str(model_dir))
    h = torch.randn(1, 7, model.ctc.proj.in_features)
    assert torch.equal(model.ctc(h), again.ctc(h))


def test_a_directory_that_lost_its_classes_is_refused(classes_model_dir, tmp_path):
    model_dir, _ = classes_model_dir
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / UNIT_CLASSES).unlink()
    with pytest.raises(XasrError, match="unit_classes.json is missing"):
        load_model_dir(str(broken))


def test_a_stage_cannot_start_from_a_head_of_the_other_kind(classes_model_dir):
    from omegaconf import OmegaConf

    model_dir, _ = classes_model_dir
    _, cfg, _ = load_model_dir(str(model_dir))
    cfg.model.unit_classes = None
    plain = XLLMSpeechModel(OmegaConf.to_object(cfg.model))
    with pytest.raises(XasrError, match="unit_classes"):
        init_from_dir(plain, str(model_dir))
