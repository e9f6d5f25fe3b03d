"""xasr benchmark on the tiny synthesized Aishell corpus: a tiny random xasr model (CTC, CIF and LLM
decoding through a tiny LLM) on a cut manifest and the same audio as a Kaldi directory, and, when
the Whisper base model is installed, faster-whisper and transformers Whisper on 2 utterances."""
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_setup(tiny_aishell, tmp_path_factory):
    import torch
    from omegaconf import OmegaConf
    from lhotse import CutSet

    from tests.models.tiny_llm import make_tiny_llm
    from tests.test_trainer import TINY_MODEL
    from xasr.config import load_experiment
    from xasr.data.prepare import prepare_manifests
    from xasr.data.units import train_units
    from xasr.models.model import XLLMSpeechModel
    from xasr.model_dir import save_model_dir

    d = tmp_path_factory.mktemp("bench_e2e")
    prepare_manifests("aishell", str(tiny_aishell), str(d / "m"))
    units = d / "lang/unit.model"
    train_units([str(d / "m/aishell_cuts_train.jsonl.gz")], str(d / "lang"), "char")
    llm = make_tiny_llm(d / "llm")
    cfg = load_experiment(TINY_MODEL + [f"data.units={units}", "model.use_llm=true", f"model.llm.path={llm}"])
    import sentencepiece as spm
    cfg.model.vocab_size = spm.SentencePieceProcessor(model_file=str(units)).get_piece_size()
    torch.manual_seed(0)
    model = XLLMSpeechModel(OmegaConf.to_object(cfg.model))
    save_model_dir(model, cfg, str(units), str(d / "model"))
    cfg1 = load_experiment(TINY_MODEL + [f"data.units={units}"])  # a stage-1 model: no LLM
    cfg1.model.vocab_size = cfg.model.vocab_size
    save_model_dir(XLLMSpeechModel(OmegaConf.to_object(cfg1.model)), cfg1, str(units), str(d / "model_s1"))

    # the same test utterances as a Kaldi data directory
    cuts = CutSet.from_file(d / "m/aishell_cuts_test.jsonl.gz")
    kaldi = d / "kaldi_test"
    kaldi.mkdir()
    with open(kaldi / "wav.scp", "w") as w, open(kaldi / "text", "w", encoding="utf-8") as t:
        for c in cuts:
            w.write(f"{c.id} {Path(c.recording.sources[0].source).resolve()}\n")
            t.write(f"{c.id} {c.supervisions[0].text}\n")
    return d, cuts


def test_tiny_xasr_model_on_manifest_and_kaldi_dir(tiny_setup, tmp_path):
    from xasr.benchmark.run import BenchmarkConfig, run_benchmark
    from xasr.scoring.normalize import normalize

    d, cuts = tiny_setup
    out = tmp_path / "bench"
    model = d / "model"
    report = run_benchmark(BenchmarkConfig(
        systems=[f"ctc=xasr:{model}:ctc_greedy", f"cif=xasr:{model}:cif_greedy",
                 f"llm=xasr:{model}:llm_greedy:max_duration=10"],
        sets=[f"cuts={d / 'm/aishell_cuts_test.jsonl.gz'}", f"kaldi={d / 'kaldi_test'}"],
        normalizers=["chinese_char"], reference="llm", threads=1, resamples=200, out_dir=str(out)))
    n_chars = sum(len(normalize(c.supervisions[0].text, "chinese_char")) for c in cuts)
    assert [(r.system, r.set_name) for r in report.rows] == [
        ("ctc", "cuts"), ("ctc", "kaldi"), ("cif", "cuts"), ("cif", "kaldi"), ("llm", "cuts"), ("llm", "kaldi")]
    for r in report.rows:
        assert (r.unit, r.num_ref, r.num_utts) == ("CER", n_chars, len(cuts))
        assert r.num_errors == r.num_sub + r.num_del + r.num_ins
        assert r.ci_low <= r.error_rate <= r.ci_high and r.rtf > 0 and r.decode_seconds > 0
        assert (r.reference is None) == (r.system == "llm")
        if r.system != "llm":
            assert 0.0 <= r.p_bootstrap <= 1.0
    # the Kaldi directory holds the same audio: features made on the fly give the same hypotheses
    for system in ("ctc", "cif", "llm"):
        assert (out / f"hyps-cuts-{system}.txt").read_text() == (out / f"hyps-kaldi-{system}.txt").read_text()
    # decoding work: memory for every system, LLM passes and tokens only for the LLM decoding
    for r in report.rows:
        assert r.peak_rss_gb is not None and r.peak_rss_gb > 0.05
        if r.system == "llm":
            assert r.output_tokens > 0 and r.llm_passes >= r.output_tokens  # greedy: one pass per token at least
        else:
            assert r.llm_passes is None
    md = (out / "benchmark.md").read_text()
    assert "## Decoding work" in md and "LLM passes / output token" in md
    data = json.loads((out / "benchmark.json").read_text())
    assert {s["details"]["features"] for s in data["systems"]} == {"fbank"}
    assert all("llm_passes" in r for r in data["results"])
    assert (out / "benchmark.png").stat().st_size > 0 and (out / "wer-kaldi-cif.txt").is_file()


def test_llm_method_on_a_stage1_model_is_refused_on_load(tiny_setup):
    from xasr.benchmark.systems import RunSettings, make_system, parse_system_spec
    from xasr.errors import XasrError

    d, _ = tiny_setup
    system = make_system(parse_system_spec(f"xasr:{d / 'model_s1'}:llm_greedy"), RunSettings(threads=1))
    with pytest.raises(XasrError, match="llm_greedy needs a model trained with the LLM"):
        system.load()
    ok = make_system(parse_system_spec(f"xasr:{d / 'model_s1'}:ctc_greedy"), RunSettings(threads=1))
    assert ok.load()["use_llm"] is False


def _whisper_dirs():
    from xasr.pretrained.install import MODELS, default_models_dir, is_installed

    d = default_models_dir() / "whisper-base"
    return d if is_installed(MODELS["whisper-base"], d) and (d / "ct2/model.bin").is_file() else None


@pytest.mark.skipif(_whisper_dirs() is None, reason="Whisper base is not installed (xasr models install whisper-base "
                                                    "puts the transformers and CTranslate2 files in models/whisper-base)")
def test_whisper_baselines_on_two_utterances(tiny_setup, tmp_path):
    from xasr.benchmark.run import BenchmarkConfig, run_benchmark

    d, _ = tiny_setup
    w = _whisper_dirs()
    report = run_benchmark(BenchmarkConfig(
        systems=[f"fw=faster-whisper:{w}:int8", f"hf=hf-whisper:{w}"], sets=[f"test={d / 'kaldi_test'}"],
        normalizers=["chinese_char"], threads=1, resamples=100, max_utts=2, out_dir=str(tmp_path / "b")))
    fw, hf = report.rows
    assert fw.num_utts == hf.num_utts == 2 and fw.num_ref == hf.num_ref > 0
    hyps = (tmp_path / "b/hyps-test-fw.txt").read_text().splitlines()
    assert len(hyps) == 2
    assert report.systems[0]["details"]["ct2_dir"] == str((w / "ct2").resolve())
