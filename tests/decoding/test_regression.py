"""Every decoding method's output on a fixed tiny model, compared with stored values.

The model is built from seeds (a tiny conformer, C-Former and adapter over a tiny random LLM,
with a character 2-gram LM and homophone-tied heads), the batch is seeded noise; the texts,
the llm_rescore N-best scores and the work counters each method gives are in
regression_outputs.json next to this file. A change to the decoding code that changes any of
them fails here. To store new values after a change that is meant to change outputs:
``XASR_WRITE_REGRESSION=1 pytest tests/decoding/test_regression.py``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from tests.models.tiny_llm import make_tiny_llm
from tests.transcribe.conftest import TEXT, make_model_dir, make_units
from xasr.data.dataset import Batch
from xasr.decoding.methods import DECODING_METHODS, decode, options_for
from xasr.decoding.ngram import tokenize, train_kneser_ney
from xasr.model_dir import load_model_dir

STORED = Path(__file__).with_name("regression_outputs.json")
# (name, method, option overrides): every method with the model's options, and the variants
# whose code paths the defaults do not reach
CASES = [(m, m, {}) for m in DECODING_METHODS] + [
    ("ctc_beam homophones 0.3", "ctc_beam", {"homophone_scale": 0.3}),
    ("ctc_beam no LM", "ctc_beam", {"lm_weight": 0.0, "lm_token_bonus": 0.0}),
    ("llm_rescore w 0 bonus 3", "llm_rescore", {"rescore_ctc_weight": 0.0, "rescore_length_bonus": 3.0}),
    ("llm_ctc w 0.8", "llm_ctc", {"joint_ctc_weight": 0.8, "joint_length_bonus": 0.5}),
    ("llm_speculative ctc draft", "llm_speculative", {"speculative_draft": "ctc"}),
    ("llm_fast always", "llm_fast", {"fast_path_threshold": 0.0}),
    ("llm_greedy no repeat cut", "llm_greedy", {"repeat_ngram": 0}),
]


@pytest.fixture(scope="module")
def fixed_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("regression")
    units = make_units(root / "lang")
    n = spm.SentencePieceProcessor(model_file=str(units)).get_piece_size()
    (root / "unit_classes.json").write_text(json.dumps([i if i < 8 else 8 + (i % 5) for i in range(n)]))
    arpa = train_kneser_ney([tokenize(t, "char") for t in TEXT], 2).write_arpa(root / "lm.arpa")
    model_dir = make_model_dir(root / "model", units, llm_dir=make_tiny_llm(root / "llm"), seed=3, ngram=arpa,
                               unit_classes=root / "unit_classes.json")
    model, cfg, sp = load_model_dir(str(model_dir))
    model.cfg.ngram.tokens = "char"  # the LM is over characters
    torch.manual_seed(0)
    batch = Batch(torch.randn(3, 160, 80), torch.tensor([160, 120, 72]), ids=["a", "b", "c"])
    return model, sp, batch


def _outputs(model, sp, batch) -> dict:
    out = {}
    base = options_for(model, ctc_beam_size=6, lm_weight=0.5, lm_token_bonus=1.0)
    for name, method, changes in CASES:
        r = decode(model, batch, method, sp, dataclasses.replace(base, **changes))
        entry = {"texts": r.texts, "stats": dataclasses.asdict(r.stats)}
        if r.nbest is not None:
            entry["nbest"] = [[[text, list(units), round(ctc, 4), round(llm, 4)] for text, units, ctc, llm in nb]
                              for nb in r.nbest]
        out[name] = entry
    return out


def test_every_method_gives_the_stored_outputs(fixed_model):
    got = _outputs(*fixed_model)
    if os.environ.get("XASR_WRITE_REGRESSION"):
        STORED.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n")
    want = json.loads(STORED.read_text())
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name]["texts"] == want[name]["texts"], name
        assert got[name]["stats"] == want[name]["stats"], name
        assert ("nbest" in got[name]) == ("nbest" in want[name]), name
        for g_nb, w_nb in zip(got[name].get("nbest", []), want[name].get("nbest", [])):
            assert [(t, u) for t, u, _, _ in g_nb] == [(t, u) for t, u, _, _ in w_nb], name
            assert [s for e in g_nb for s in e[2:]] == pytest.approx([s for e in w_nb for s in e[2:]], abs=2e-3), name


def test_the_outputs_are_not_degenerate():
    """The stored values exercise the search: texts are not all empty, and the methods disagree."""
    want = json.loads(STORED.read_text())
    assert all(any(t for t in e["texts"]) for e in want.values())
    assert len({json.dumps(e["texts"]) for e in want.values()}) >= 5
    assert all(len(nb) > 1 for nb in want["llm_rescore"]["nbest"])
    # llm_speculative is llm_greedy with fewer passes
    assert want["llm_speculative"]["texts"] == want["llm_greedy"]["texts"]
    assert want["llm_speculative"]["stats"]["row_passes"] <= want["llm_greedy"]["stats"]["row_passes"]
