"""A model directory keeps its own copy of the n-gram LM, and ctc_beam decodes with it."""
from __future__ import annotations

import shutil

import pytest
import torch

from tests.transcribe.conftest import TEXT, make_model_dir, make_units
from xasr.data.dataset import Batch
from xasr.decoding.methods import decode, lm_fusion, options_for
from xasr.decoding.ngram import tokenize, train_kneser_ney
from xasr.errors import XasrError
from xasr.model_dir import NGRAM, load_model_dir


@pytest.fixture(scope="module")
def lm_model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_model")
    units = make_units(root / "lang")
    arpa = train_kneser_ney([tokenize(t.upper(), "char") for t in TEXT], 2).write_arpa(root / "elsewhere" / "lm.arpa")
    model_dir = make_model_dir(root / "model", units, ngram=arpa)
    shutil.rmtree(root / "elsewhere")  # the directory must not need the original file
    return model_dir


def test_the_lm_travels_with_the_model(lm_model_dir):
    assert (lm_model_dir / NGRAM).is_file()
    model, cfg, units = load_model_dir(str(lm_model_dir))
    assert model.cfg.ngram.path == str(lm_model_dir / NGRAM)
    assert lm_fusion(model, units, options_for(model)) is not None
    assert lm_fusion(model, units, options_for(model, lm_weight=0.0, lm_token_bonus=0.0)) is None
    with pytest.raises(XasrError, match="weight"):
        options_for(model, lm_weight=-1.0)


def test_ctc_beam_decodes_with_the_lm(lm_model_dir):
    model, cfg, units = load_model_dir(str(lm_model_dir))
    torch.manual_seed(0)
    batch = Batch(torch.randn(2, 120, 80), torch.tensor([120, 80]), ids=["a", "b"])
    with_lm = decode(model, batch, "ctc_beam", units, options_for(model, ctc_beam_size=4)).texts
    without = decode(model, batch, "ctc_beam", units,
                     options_for(model, ctc_beam_size=4, lm_weight=0.0, lm_token_bonus=0.0)).texts
    assert len(with_lm) == len(without) == 2 and all(isinstance(t, str) for t in with_lm)


def test_a_directory_that_lost_its_lm_is_refused(lm_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(lm_model_dir, broken)
    (broken / NGRAM).unlink()
    with pytest.raises(XasrError, match="lm.arpa is missing"):
        load_model_dir(str(broken))
