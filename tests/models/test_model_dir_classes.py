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
from xasr.decoding.methods import ctc_nbest, options_for
from xasr.errors import XasrError
from xasr.models.model import XLLMSpeechModel
from xasr.model_dir import UNIT_CLASSES, init_from_dir, load_model_dir


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


def test_the_homophone_scale_moves_the_prefix_search_to_classes(classes_model_dir, tmp_path):
    import numpy as np

    from xasr.decoding.homophones import class_log_probs
    from xasr.decoding.joint_ctc import CtcPrefixScorer
    from xasr.decoding.rescore import ctc_prefix_search
    from xasr.model_dir import read_decoding, save_decoding

    model_dir, classes = classes_model_dir
    model, _, _ = load_model_dir(str(model_dir))
    torch.manual_seed(1)
    lp = torch.randn(2, 9, len(classes)).log_softmax(-1)
    lens = torch.tensor([9, 6])
    plain = ctc_nbest(model, lp, lens, options_for(model))
    opts = options_for(model, homophone_scale=0.25)
    tied = ctc_nbest(model, lp, lens, opts)
    cls = np.array(classes)
    for b, n in enumerate(lens.tolist()):  # the search on class-shared log-probs, class-aware
        scorer = CtcPrefixScorer(class_log_probs(lp[b, :n].numpy(), cls, 0.25), model.ctc.blank_id, classes=cls)
        assert tied[b] == ctc_prefix_search(scorer, beam=opts.ctc_beam_size, nbest=opts.ctc_beam_size)
    assert tied != plain
    with pytest.raises(XasrError, match=r"in \[0, 1\], not 1.5"):
        options_for(model, homophone_scale=1.5)
    # the scale travels with the model's tuned decoding
    copy = tmp_path / "tuned"
    shutil.copytree(model_dir, copy)
    save_decoding(str(copy), "llm_rescore", {"rescore_ctc_weight": 0.5, "homophone_scale": 0.25})
    assert read_decoding(str(copy))["settings"]["homophone_scale"] == 0.25
    assert options_for(load_model_dir(str(copy))[0]).homophone_scale == 0.25


def test_a_homophone_scale_needs_a_head_that_ties_homophones(tmp_path):
    from tests.transcribe.conftest import make_model_dir, make_units

    model, _, _ = load_model_dir(str(make_model_dir(tmp_path / "plain", make_units(tmp_path / "lang"))))
    assert options_for(model, homophone_scale=1.0).homophone_scale == 1.0  # off: fine
    with pytest.raises(XasrError, match="ties homophones"):
        options_for(model, homophone_scale=0.5)
