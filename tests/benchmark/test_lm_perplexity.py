"""benchmarks/lm_perplexity.py: the n-gram's and the LLM's perplexity on the same tokens, each
checked against a computation of its own (the n-gram's sentence scores, the LLM's training loss)."""
from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.models.tiny_llm import make_tiny_llm
from xasr.decoding.ngram import tokenize, train_kneser_ney

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks/lm_perplexity.py"
TEXTS = ["今天天气很好", "我们去公园", "天气很好我们去", "THE CAT SAT"]


def _load_script():
    spec = importlib.util.spec_from_file_location("lm_perplexity", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _manifest(path: Path, texts) -> Path:
    from lhotse import CutSet, Recording, SupervisionSegment
    from lhotse.audio import AudioSource
    from lhotse.cut import MonoCut

    cuts = []
    for i, t in enumerate(texts):
        rec = Recording(id=f"r{i}", sources=[AudioSource(type="file", channels=[0], source="none.wav")],
                        sampling_rate=16000, num_samples=16000, duration=1.0)
        sup = SupervisionSegment(id=f"s{i}", recording_id=rec.id, start=0.0, duration=1.0, text=t)
        cuts.append(MonoCut(id=f"c{i}", start=0.0, duration=1.0, channel=0, recording=rec, supervisions=[sup]))
    CutSet.from_cuts(cuts).to_file(str(path))
    return path


def test_llm_logprob_is_the_training_loss_of_the_text_and_its_end(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    llm_dir = make_tiny_llm(tmp_path / "llm")
    tok = AutoTokenizer.from_pretrained(llm_dir)
    model = AutoModelForCausalLM.from_pretrained(llm_dir).eval()
    mod = _load_script()
    for text in TEXTS:
        ids = [tok.bos_token_id] + tok(text, add_special_tokens=False).input_ids + [tok.eos_token_id]
        x = torch.tensor([ids])
        with torch.no_grad():
            loss = float(model(x, labels=x).loss)  # mean over the len(ids) - 1 predicted tokens
        assert mod.llm_logprob(model, tok, text) == pytest.approx(-loss * (len(ids) - 1), rel=1e-4)


def test_the_table_holds_both_perplexities_on_the_same_tokens(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    llm_dir = make_tiny_llm(tmp_path / "llm")
    lm = train_kneser_ney((tokenize(t, "char") for t in TEXTS * 3), order=3)
    arpa = lm.write_arpa(tmp_path / "char3.arpa")
    cuts = _manifest(tmp_path / "dev.jsonl.gz", TEXTS)
    r = subprocess.run([sys.executable, str(SCRIPT), "--arpa", str(arpa), "--tokens", "char", "--llm", str(llm_dir),
                        "--cuts", f"dev={cuts}", "--threads", "1"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Command: python benchmarks/lm_perplexity.py --arpa")
    row = [line for line in r.stdout.splitlines() if line.startswith("| dev |")]
    assert len(row) == 1
    _, name, n_texts, n_tokens, ngram_ppl, llm_ppl, _ = [c.strip() for c in row[0].split("|")]
    n = sum(len(tokenize(t, "char")) + 1 for t in TEXTS)
    assert (n_texts, int(n_tokens)) == (str(len(TEXTS)), n)
    read = type(lm).read_arpa(arpa)
    want = math.exp(-sum(read.sentence_logprob(tokenize(t, "char")) for t in TEXTS) / n)
    assert float(ngram_ppl) == pytest.approx(want, abs=0.06)
    mod = _load_script()
    tok = AutoTokenizer.from_pretrained(llm_dir)
    model = AutoModelForCausalLM.from_pretrained(llm_dir).eval()
    want_llm = math.exp(-sum(mod.llm_logprob(model, tok, t) for t in TEXTS) / n)
    assert float(llm_ppl) == pytest.approx(want_llm, abs=0.06)
    # --case lower: the LLM reads the lower-cased transcripts, the n-gram the same as before
    r = subprocess.run([sys.executable, str(SCRIPT), "--arpa", str(arpa), "--tokens", "char", "--llm", str(llm_dir),
                        "--cuts", f"dev={cuts}", "--threads", "1", "--case", "lower"], capture_output=True, text=True,
                       cwd=REPO)
    assert r.returncode == 0, r.stderr
    cells = [line for line in r.stdout.splitlines() if line.startswith("| dev |")][0].split("|")
    want_lower = math.exp(-sum(mod.llm_logprob(model, tok, t.lower()) for t in TEXTS) / n)
    assert float(cells[4]) == pytest.approx(float(ngram_ppl)) and float(cells[5]) == pytest.approx(want_lower, abs=0.06)
    assert want_lower != pytest.approx(want_llm)
    # a set without NAME=
    r = subprocess.run([sys.executable, str(SCRIPT), "--arpa", str(arpa), "--tokens", "char", "--llm", str(llm_dir),
                        "--cuts", str(cuts)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode != 0 and "give NAME=MANIFEST" in r.stderr
