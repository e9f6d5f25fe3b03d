"""run.sh option handling, stage selection, .done markers and an end-to-end run of the data
stages of both recipes on a tiny synthesized corpus (in a copy of the recipe directory)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _env():
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    return env


def _run(script: Path, *args, cwd=None):
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=_env(), cwd=cwd)


@pytest.fixture
def recipe_copy(tmp_path):
    """The repository's tools/ and recipes/ copied to tmp_path (runs never touch the checkout)."""
    shutil.copytree(REPO / "tools", tmp_path / "tools")
    for name in ("aishell", "librispeech"):
        (tmp_path / "recipes" / name).mkdir(parents=True)
        shutil.copy(REPO / "recipes" / name / "run.sh", tmp_path / "recipes" / name / "run.sh")
    return tmp_path


@pytest.mark.parametrize("recipe", ["aishell", "librispeech"])
def test_help_lists_options(recipe):
    r = _run(REPO / "recipes" / recipe / "run.sh", "--help")
    assert r.returncode == 0
    for opt in ("--stage", "--stop-stage", "--corpus-dir", "--train-hours", "--nj", "--speed-perturb", "--nproc",
                "--torchrun-opts", "--work-dir", "--fbank"):
        assert opt in r.stdout


@pytest.mark.parametrize("recipe, hours", [("aishell", "10"), ("librispeech", "8")])
def test_the_budget_chooses_defaults_and_the_command_line_still_wins(recipe, hours):
    def default(out: str, option: str) -> str:
        line = next(x for x in out.splitlines() if x.strip().startswith(option + " "))
        return line.rsplit("[", 1)[1].rstrip("]")

    script = REPO / "recipes" / recipe / "run.sh"
    quick, full = _run(script, "--help").stdout, _run(script, "--budget", "full", "--help").stdout
    assert default(quick, "--budget") == "quick" and default(full, "--budget") == "full"
    assert default(full, "--train-hours") == hours and default(quick, "--train-hours") != hours
    assert (default(quick, "--speed-perturb"), default(full, "--speed-perturb")) == ("false", "true")
    assert default(quick, "--stage1-minutes") == "" and float(default(full, "--stage1-minutes")) > 30
    assert default(quick, "--nbest") == "" and int(default(full, "--nbest")) > 8
    assert default(_run(script, "--budget=full", "--help").stdout, "--train-hours") == hours
    # an option given on the command line wins over the budget's default, in either order
    for args in (["--budget", "full", "--nbest", "4"], ["--nbest=4", "--budget=full"]):
        probe = subprocess.run(
            ["bash", "-c", 'here=$1; shift; full_budget=(nbest=16 train_hours=9); recipe_title=t; '
             'corpus_dir_help=d; extra_help=""; train_hours=1; decode_methods=x; llm_vocab=full; '
             '. "$here/../../tools/recipe_options.sh"; echo "$budget $nbest $train_hours"',
             "probe", str(REPO / "recipes" / recipe), *args], capture_output=True, text=True, env=_env())
        assert probe.stdout.split() == ["full", "4", "9"], probe.stderr
    bad = _run(script, "--budget", "fast")
    assert bad.returncode == 2 and "--budget takes quick or full, not 'fast'" in bad.stderr


@pytest.mark.parametrize("args, message", [
    (["--no-such-option", "1"], "unknown option --no-such-option"),
    (["--stage"], "option --stage needs a value"),
    (["--speed-perturb", "yes"], "takes true or false, not 'yes'"),
    (["--llm-vocab", "all"], "--llm-vocab takes full or units, not 'all'"),
    (["--encoder-layers", "top"], "--encoder-layers takes a number of layers (1 or more) or a range A-B, not 'top'"),
    (["--encoder-layers", "0"], "--encoder-layers takes a number of layers (1 or more) or a range A-B, not '0'"),
    (["--encoder-layers", "0-3"], "--encoder-layers takes a number of layers (1 or more) or a range A-B, not '0-3'"),
    (["--encoder-layers", "5-3"], "--encoder-layers 5-3: the first layer comes after the last"),
    (["--encoder-layers", "3-5", "--encoder-top", "1"],
     "--encoder-layers 3-5 with --encoder-top 1: the top layers train or several layers are read, not both"),
    (["stray"], "unexpected argument 'stray'"),
    (["--help_message", "x"], "invalid option --help_message"),
])
def test_bad_options_fail_before_any_work(recipe_copy, args, message):
    script = recipe_copy / "recipes/aishell/run.sh"
    r = _run(script, *args)
    assert r.returncode == 2
    assert message in r.stderr
    assert not (recipe_copy / "recipes/aishell/data").exists()


@pytest.mark.parametrize("recipe", ["aishell", "librispeech", "multimodal"])
def test_bad_nproc_fails_before_any_work(recipe_copy, recipe):
    if recipe == "multimodal":
        shutil.copytree(REPO / "recipes/multimodal", recipe_copy / "recipes/multimodal")
    r = _run(recipe_copy / "recipes" / recipe / "run.sh", "--nproc", "two")
    assert r.returncode != 0 and "--nproc takes a number of processes (1 or more), not 'two'" in r.stderr
    assert not (recipe_copy / "recipes" / recipe / "data").exists()


def test_download_needs_a_corpus_dir(recipe_copy):
    r = _run(recipe_copy / "recipes/aishell/run.sh", "--download", "true")
    assert r.returncode != 0 and "--download true needs --corpus-dir" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("recipe, sets, lang", [
    ("aishell", ("train", "dev", "test", "test_seen"), "lang_char"),
    ("librispeech", ("train-clean-100", "dev-clean", "test-clean", "test-seen"), "lang_bpe_100"),
])
def test_data_stages_end_to_end_and_rerun_skips(recipe_copy, recipe, sets, lang):
    script = recipe_copy / "recipes" / recipe / "run.sh"
    extra = ["--eval-hours", "0.003", "--seen-hours", "0.003"]
    extra += ["--vocab-size", "100"] if recipe == "librispeech" else []
    # called from another directory: the recipe works in its own
    r = _run(script, "--stop-stage", "3", "--train-hours", "0.03", *extra, cwd=recipe_copy)
    assert r.returncode == 0, r.stdout + r.stderr
    d = recipe_copy / "recipes" / recipe
    for s in sets:
        assert (d / f"data/manifests/{recipe}_cuts_{s}.jsonl.gz").is_file()
        assert (d / f"data/fbank/{recipe}_cuts_{s}.jsonl.gz").is_file()
        assert s in r.stdout  # the final summary lists every set
    assert (d / f"data/{lang}/unit.model").is_file()
    if recipe == "aishell":  # the homophone classes the unit heads tie: one id per unit, fewer classes
        import json

        import sentencepiece as spm

        classes = json.loads((d / f"data/{lang}/unit_classes.json").read_text())
        n = spm.SentencePieceProcessor(model_file=str(d / f"data/{lang}/unit.model")).get_piece_size()
        assert len(classes) == n and len(set(classes)) < n
    else:
        assert not (d / f"data/{lang}/unit_classes.json").exists()
    # the n-gram LM, from the synthesized corpus' LM text, without a sentence of the evaluation sets
    lm_text = (d / f"download/{recipe}_synth/lm-text.txt").read_text(encoding="utf-8").splitlines()
    from lhotse import CutSet

    from xasr.data.dataset import batch_texts
    evaluation = {t for s in sets[1:] for t in batch_texts(CutSet.from_file(d / f"data/manifests/{recipe}_cuts_{s}.jsonl.gz"))}
    assert len(lm_text) > 1000 and evaluation and not evaluation & set(lm_text)
    lm_log = (d / "log/stage3-lm.log").read_text(encoding="utf-8")
    tokens = "char" if recipe == "aishell" else "word"
    assert (d / f"data/lm/{tokens}3.arpa").is_file() and "3-gram" in r.stdout + lm_log
    for stage in range(4):
        assert f"Stage {stage}:" in r.stdout
    assert (d / "log/stage2-fbank.log").is_file()
    # the Whisper encoder reads the audio: stage 2 stores no fbank unless asked
    assert "Stage 2: filtered cuts without features" in r.stdout
    assert not any(c.has_features for c in CutSet.from_file(d / f"data/fbank/{recipe}_cuts_{sets[1]}.jsonl.gz"))

    # rerun: every stage is skipped and nothing is rewritten
    mtime = (d / f"data/fbank/{recipe}_cuts_{sets[0]}.jsonl.gz").stat().st_mtime_ns
    r = _run(script, "--stop-stage", "3", "--train-hours", "0.03", *extra)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("skipped") == 5  # corpus, manifests, features, units, LM
    assert (d / f"data/fbank/{recipe}_cuts_{sets[0]}.jsonl.gz").stat().st_mtime_ns == mtime

    # changed settings: the finished stage is kept, with a warning saying how to redo it
    r = _run(script, "--stage", "2", "--stop-stage", "2", "--speed-perturb", "true", *extra)
    assert r.returncode == 0
    assert "made with other settings" in r.stdout and "Stage 1" not in r.stdout

    # --stage/--stop-stage select one stage; removing its marker redoes it (here with fbank)
    (d / "data/fbank/.done").unlink()
    r = _run(script, "--stage", "2", "--stop-stage", "2", "--fbank", "true", *extra)
    assert r.returncode == 0, r.stderr
    assert "Stage 2: fbank features" in r.stdout
    cut = next(iter(CutSet.from_file(d / f"data/fbank/{recipe}_cuts_{sets[1]}.jsonl.gz")))
    assert cut.has_features and cut.features.num_features == 80 and (d / cut.features.storage_path).exists()
    assert "Stage 0" not in r.stdout and "Stage 3" not in r.stdout


@pytest.mark.slow
def test_work_dir_holds_the_run_and_the_recipe_directory_stays_clean(recipe_copy, tiny_aishell, tmp_path):
    work = tmp_path / "runs" / "a"
    r = _run(recipe_copy / "recipes/aishell/run.sh", "--stop-stage", "1", "--corpus-dir", str(tiny_aishell),
             "--work-dir", "runs/a", cwd=tmp_path)  # relative to the caller's cwd
    assert r.returncode == 0, r.stdout + r.stderr
    assert (work / "data/manifests/aishell_cuts_train.jsonl.gz").is_file()
    assert (work / "log/stages.tsv").is_file() and (work / "data/manifests/.done").is_file()
    assert sorted(p.name for p in (recipe_copy / "recipes/aishell").iterdir()) == ["run.sh"]


@pytest.mark.slow
def test_bad_corpus_dir_fails_with_the_file_named(recipe_copy, tiny_aishell, tmp_path):
    corpus = shutil.copytree(tiny_aishell, tmp_path / "bad")
    (corpus / "data_aishell/transcript/aishell_transcript_v0.8.txt").unlink()
    r = _run(recipe_copy / "recipes/aishell/run.sh", "--stop-stage", "3", "--corpus-dir", str(corpus))
    assert r.returncode != 0
    assert "missing transcript" in r.stderr and "aishell_transcript_v0.8.txt" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (recipe_copy / "recipes/aishell/data/manifests/.done").exists()


@pytest.mark.slow
def test_librispeech_recipe_all_stages_on_a_tiny_corpus(recipe_copy):
    """Every stage: corpus, manifests, features, units, models, stored encoder outputs, stage 1,
    stage 2, decoding with every method, scoring, the results table and the benchmark against
    faster-whisper (tiny models and few steps: a plumbing test), under --budget full (its training
    minutes and N-best reach the configs; the corpus stays tiny) and --llm-vocab units (the LLM
    scoring only the tokens the BPE units spell), with the heads on Whisper's 3rd and 4th layers
    side by side (--encoder-layers 3-4); then stage 1 again with
    --nproc 2 (torchrun, DDP on CPUs), which must end with the same model as one process."""
    from xasr.pretrained.install import default_models_dir

    env = _env()
    env["XASR_MODELS_DIR"] = str(default_models_dir())  # share installed models with other runs
    tiny = ("model.cformer.dim=64 model.cformer.num_layers=1 model.cformer.ff_dim=128 model.context.dim=64 "
            "model.context.num_layers=1 model.context.ff_dim=128 "
            "model.adapter.hidden_dim=64 train.log_interval=1 train.tensorboard=false")
    # stage 1 without dropout (N processes draw other masks than one) and at its full learning rate
    # from the first step (3 steps must move the weights well beyond the comparison's tolerance)
    stage1 = (f"train.max_steps=3 {tiny} data.max_duration=40 optim.warmup_steps=1 model.context.dropout=0 "
              "model.cformer.dropout=0 model.cformer.cif.dropout=0")
    script = recipe_copy / "recipes/librispeech/run.sh"
    r = subprocess.run(["bash", str(script), "--budget", "full", "--speed-perturb", "false",
                        "--train-hours", "0.03", "--eval-hours", "0.003", "--seen-hours", "0.003",
                        "--vocab-size", "100", "--llm-vocab", "units", "--encoder-layers", "3-4",
                        "--stage1-opts", stage1,
                        # an untrained model's LLM runs to its length bound: keep the bound short
                        "--stage2-opts", f"train.max_steps=2 {tiny} model.length_bound_factor=0.2 "
                                         "model.length_bound_margin=3"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    d = recipe_copy / "recipes/librispeech"
    for stage in range(10):
        assert f"Stage {stage}:" in r.stdout
    # stages 1-2 trained on stored outputs of Whisper's 3rd and 4th layers (--encoder-layers 3-4), and
    # the model directories keep that layer count, so their decodings run the same truncated encoder
    layers = 4
    cache = json.loads((d / "data/encoder_cache_l3-4/cache.json").read_text())
    assert cache["num_layers"] == layers and cache["output_layers"] == 2
    assert not (d / "data/encoder_cache").exists()
    assert (d / "exp/stage2/model/lm.arpa").is_file()  # the n-gram LM travels with the model
    methods = ("ctc_greedy", "llm_greedy", "llm_rescore")  # the test set's, in stage 9
    for s in ("dev-clean", "test-seen"):  # stage 7: dev and the seen-voice split
        for m in ("ctc_greedy", "llm_rescore"):
            wer = (d / f"exp/decode/wer-{s}-{m}.txt").read_text()
            assert wer.startswith("%WER ")
            assert (d / f"exp/decode/errs-{s}-{m}.txt").is_file()
    table = (d / "exp/decode/results.md").read_text()
    assert "| llm_rescore |" in table and "dev-clean WER (%)" in table and "test-seen WER (%)" in table
    tuned = json.loads((d / "exp/decode/rescore-weights.json").read_text())  # llm_rescore's weights, from dev
    assert tuned["tuned_on"] == "dev-clean" and (d / "exp/decode/tune-dev-clean.png").is_file()
    assert "tuned on this set" in table
    assert (d / "exp/stage1/loss.png").is_file() and (d / "exp/stage2/loss.png").is_file()
    bench = (d / "exp/benchmark/benchmark.md").read_text()  # stage 9: the test set, xasr against faster-whisper
    assert "faster-whisper-base-int8-beam5" in bench and "llm_rescore" in bench
    assert (d / "exp/benchmark/benchmark.png").is_file()
    # stage 9's llm_rescore used the weights stage 7 chose (written into the model directory)
    rescore = [x for x in json.loads((d / "exp/benchmark/benchmark.json").read_text())["systems"]
               if x["name"] == "llm_rescore"][0]["details"]["decoding"]
    assert (rescore["rescore_ctc_weight"], rescore["rescore_length_bonus"]) == (tuned["ctc_weight"], tuned["length_bonus"])
    # and the LLM scored only the tokens the units spell, in stage 7 (recorded with the weights) and stage 9
    saved = json.loads((d / "exp/stage2/model/decoding.json").read_text())["settings"]
    assert saved["llm_vocab"] == "units" and rescore["llm_vocab"] == "units"
    # the run's results: every stage timed, peak memory, every method on every set with its interval
    res = json.loads((d / "exp/results.json").read_text())
    assert res["budget"] == "full" and res["main_method"] == "llm_rescore" and res["unit"] == "WER"
    from omegaconf import OmegaConf
    s1, s2 = (OmegaConf.load(d / f"exp/stage{k}/model/config.yaml") for k in (1, 2))
    assert (s1.train.max_minutes, s2.train.max_minutes, s2.model.ctc_beam_size) == (55, 15, 16)
    assert s1.model.encoder.whisper.num_layers == s2.model.encoder.whisper.num_layers == layers
    assert s1.model.encoder.whisper.output_layers == s2.model.encoder.whisper.output_layers == 2
    assert res["settings"]["encoder_layers"] == "3-4"
    assert res["wall_minutes"] > 0 and 0 < res["peak_rss_gb"] < 24
    assert set(res["stage_minutes"]) == {str(k) for k in range(10)}
    # what the run was: its options, its training audio, each training stage's steps and budget
    assert res["settings"]["train_hours"] == 0.03 and res["settings"]["speed_perturb"] is False
    assert res["settings"]["llm_vocab"] == "units"
    assert 0 < res["train_audio_hours"] < 0.1
    assert res["training"]["stage1"]["steps"] == 3 and res["training"]["stage2"]["max_minutes"] == 15
    assert set(res["sets"]) == {"dev-clean", "test-seen", "test-clean"}
    assert set(res["sets"]["test-clean"]) == {*methods, "faster-whisper-base-int8-beam5"}
    for per_set in res["sets"].values():
        for r in per_set.values():
            lo, hi = r["ci95"]
            assert 0 <= lo <= hi and r["error"] >= 0 and r["rtf"] > 0
    # a rerun skips the trained stages
    r = subprocess.run(["bash", str(script), "--stage", "5", "--stop-stage", "6", "--encoder-layers", "3-4"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.count("already trained") == 2

    # stage 1 again, as 2 torchrun processes: the same model as the one-process run
    from safetensors.torch import load_file

    shutil.move(d / "exp/stage1", d / "exp/stage1-one-process")
    r = subprocess.run(["bash", str(script), "--budget", "full", "--stage", "5", "--stop-stage", "5", "--nproc", "2",
                        "--vocab-size", "100", "--encoder-layers", "3-4", "--stage1-opts", stage1], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "training with torchrun: 2 process(es)" in r.stdout
    assert "world size 2" in (d / "exp/stage1/train.log").read_text()
    one = load_file(str(d / "exp/stage1-one-process/model/model.safetensors"))
    two = load_file(str(d / "exp/stage1/model/model.safetensors"))
    assert one.keys() == two.keys()
    for k in one:
        a, b = one[k], two[k]
        if k.endswith("qkv.bias"):  # the key bias cannot change any attention weight: its gradient is
            n = a.numel() // 3      # rounding noise, which Adam scales up to learning-rate-sized steps
            a, b = torch.cat([a[:n], a[2 * n:]]), torch.cat([b[:n], b[2 * n:]])
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (k, (a - b).abs().max())
    # ... and the ranks' peaks add up in the run's peak memory
    ranks = [json.loads(x) for x in (d / "log/usage.jsonl").read_text().splitlines() if '"world_size"' in x]
    assert sorted(x["rank"] for x in ranks) == [0, 1] and ranks[0]["run_id"] == ranks[1]["run_id"]
