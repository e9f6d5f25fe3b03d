"""The multimodal recipe (recipes/multimodal/run.sh): options, the results script's keyword
scoring, and every stage end to end on a tiny scenes corpus with tiny models (a plumbing test)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xasr.benchmark.multimodal import evaluate, keyword_errors, markdown, read_recogs
from xasr.scoring.wer import score, write_results

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "recipes" / "multimodal" / "run.sh"


def _env():
    from xasr.pretrained.install import default_models_dir

    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    env["XASR_MODELS_DIR"] = str(default_models_dir())  # share installed models with other runs
    return env


def test_help_lists_options():
    r = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, env=_env())
    assert r.returncode == 0
    for opt in ("--stage", "--stop-stage", "--train-hours", "--test-scenes", "--snrs", "--stage3-opts",
                "--decode-sets", "--decode-max-utts", "--shuffle-seed"):
        assert opt in r.stdout


def test_unknown_option_fails(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT), "--no-such", "1"], capture_output=True, text=True, env=_env())
    assert r.returncode == 2 and "unknown option --no-such" in r.stderr


def test_keyword_errors_count_substituted_and_deleted_keywords():
    refs = {"a": "THE RED CIRCLE IS LEFT", "b": "TWO STARS"}
    hyps = {"a": "THE BLUE CIRCLE IS", "b": "TWO BIG STARS"}
    result = score(refs, hyps, "none")
    keywords = {"a": ("THE RED CIRCLE IS LEFT".split(), [1, 2, 4]), "b": ("TWO STARS".split(), [0, 1])}
    err, n = keyword_errors(result, keywords)
    # a: RED substituted, CIRCLE right, LEFT deleted; b: an insertion is no keyword error
    assert err.tolist() == [2.0, 0.0] and n.tolist() == [3.0, 2.0]


def test_results_from_decode_directories(tmp_path):
    """Three conditions of one set through the recogs files xasr decode writes."""
    from lhotse import CutSet, MonoCut, SupervisionSegment

    texts = {f"u{i}": "THE RED CIRCLE IS ON THE LEFT" for i in range(6)}
    cuts = CutSet.from_cuts(
        MonoCut(id=k, start=0, duration=1.0, channel=0,
                supervisions=[SupervisionSegment(id=k, recording_id=k, start=0, duration=1.0, text=t)],
                custom={"keywords": [[1, "RED", "colour"], [2, "CIRCLE", "shape"], [6, "LEFT", "position"]]})
        for k, t in texts.items())
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    hyps = {"speech": {k: "THE BLUE CIRCLE IS ON THE RIGHT" for k in texts},
            "image": {k: t for k, t in texts.items()},
            "shuffled": {k: "THE GREEN CIRCLE IS ON THE RIGHT" for k in texts}}
    for cond, h in hyps.items():
        write_results(score(texts, h, "english_word"), tmp_path / "decode" / cond, "test", method="llm_greedy")
    refs, read = read_recogs(tmp_path / "decode" / "image" / "recogs-test-llm_greedy.txt")
    assert refs == texts and read == texts
    rows = evaluate(str(tmp_path / "decode"), ["speech", "image", "shuffled"],
                    {"test": str(tmp_path / "cuts.jsonl.gz")}, resamples=200)
    by = {r.condition: r for r in rows}
    assert by["speech"].wer == pytest.approx(2 / 7) and by["speech"].keyword_er == pytest.approx(2 / 3)
    assert by["image"].wer == 0 and by["image"].p_wer == 0.0 and by["image"].p_keyword == 0.0
    assert by["shuffled"].p_wer == 1.0  # not better than speech only
    assert np.isnan(by["speech"].p_wer)
    table = markdown(rows, 200, "llm_greedy")
    assert "| test | speech only | 28.6 [28.6, 28.6] | - | 66.7" in table
    assert "| shuffled image |" in table


@pytest.mark.slow
def test_multimodal_recipe_all_stages_on_a_tiny_corpus(tmp_path):
    """Every stage: corpus, units, models, encoder cache, stages 1-3, decoding in three
    conditions, the result table and plot (tiny models and a few steps)."""
    shutil.copytree(REPO / "tools", tmp_path / "tools")
    d = tmp_path / "recipes" / "multimodal"
    d.mkdir(parents=True)
    shutil.copy(SCRIPT, d / "run.sh")
    shutil.copytree(SCRIPT.parent / "local", d / "local")
    tiny = ("model.cformer.dim=64 model.cformer.num_layers=1 model.cformer.ff_dim=128 model.adapter.hidden_dim=64 "
            "train.log_interval=1 train.tensorboard=false train.num_threads=1")
    image = ("model.image.qformer.dim=64 model.image.qformer.num_layers=1 model.image.qformer.ff_dim=128 "
             "model.image.qformer.num_queries=4 model.image.adapter.hidden_dim=64 "
             "model.length_bound_factor=0.5 model.length_bound_margin=2")  # short outputs of an untrained model
    args = ["--train-hours", "0.01", "--dev-scenes", "3", "--test-scenes", "4", "--snrs", "0", "--vocab-size", "60",
            "--image-fit-scenes", "4", "--image-fit-epochs", "1",
            "--decode-sets", "test test_masked", "--decode-max-utts", "3", "--threads", "1", "--resamples", "50",
            "--stage1-opts", f"train.max_steps=3 {tiny}", "--stage2-opts", f"train.max_steps=2 {tiny}",
            "--stage3-opts", f"train.max_steps=2 {tiny} {image}"]
    r = subprocess.run(["bash", str(d / "run.sh"), *args], capture_output=True, text=True, env=_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for stage in range(7):
        assert f"Stage {stage}:" in r.stdout
    for cond in ("speech", "image", "shuffled"):
        for s in ("test", "test_masked"):
            assert (d / f"exp/decode/{cond}/wer-{s}-llm_greedy.txt").read_text().startswith("%WER ")
    table = (d / "exp/results.md").read_text()
    for label in ("speech only", "matching image", "shuffled image"):
        assert table.count(f"| {label} |") == 2
    rows = json.loads((d / "exp/results.json").read_text())
    assert [(x["set_name"], x["condition"]) for x in rows] == [
        (s, c) for s in ("test", "test_masked") for c in ("speech", "image", "shuffled")]
    assert all(x["utterances"] == 3 and x["keywords"] > 0 for x in rows)
    assert (d / "exp/results.png").stat().st_size > 0 and (d / "exp/stage3/loss.png").is_file()
    # stage 3 trained the S-Adapter only: the rest of the speech path is stage 2's, the image path
    # is the fitted one (exp/stage3_init)
    from safetensors.torch import load_file

    s2 = load_file(str(d / "exp/stage2/model/model.safetensors"))
    fit = load_file(str(d / "exp/stage3_init/model/model.safetensors"))
    s3 = load_file(str(d / "exp/stage3/model/model.safetensors"))
    assert any(k.startswith("qformer.") for k in s3) and not any(k.startswith("qformer.") for k in s2)
    for k, v in s2.items():
        if not k.startswith("adapter."):
            assert np.array_equal(v.numpy(), s3[k].numpy()), k
    assert any(not np.array_equal(v.numpy(), s3[k].numpy()) for k, v in s2.items() if k.startswith("adapter."))
    for k, v in fit.items():
        if k.startswith(("qformer.", "image_adapter.")):
            assert np.array_equal(v.numpy(), s3[k].numpy()), k
    # a rerun skips the trained stages
    r = subprocess.run(["bash", str(d / "run.sh"), "--stage", "3", "--stop-stage", "4", "--vocab-size", "60"],
                       capture_output=True, text=True, env=_env())
    assert r.returncode == 0 and r.stdout.count("already trained") == 3, r.stdout + r.stderr
