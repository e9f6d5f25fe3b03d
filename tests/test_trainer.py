"""The trainer on a tiny synthesized corpus with tiny models: stage 1, stage 2 through a tiny
frozen LLM, the model directory, exact resume after kills and SIGTERM, skipped non-finite
updates, and 2-process DDP equivalence."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.models.tiny_llm import make_tiny_llm
from xasr.config import load_experiment

pytestmark = pytest.mark.slow

TINY_MODEL = [
    "model.encoder.conformer.dim=32", "model.encoder.conformer.num_layers=1", "model.encoder.conformer.num_heads=2",
    "model.encoder.conformer.ff_dim=64", "model.encoder.conformer.conv_kernel=3",
    "model.cformer.dim=32", "model.cformer.num_layers=1", "model.cformer.num_heads=2", "model.cformer.ff_dim=64",
    "model.adapter.hidden_dim=32",
]
DETERMINISTIC = ["model.encoder.conformer.dropout=0", "model.encoder.conformer.spec_augment=false",
                 "model.cformer.dropout=0", "model.cformer.cif.dropout=0", "model.adapter.dropout=0"]


@pytest.fixture(scope="module")
def data(tiny_aishell, tmp_path_factory):
    from xasr.data.features import compute_fbank
    from xasr.data.prepare import prepare_manifests
    from xasr.data.units import train_units

    d = tmp_path_factory.mktemp("train_data")
    prepare_manifests("aishell", str(tiny_aishell), str(d / "m"))
    compute_fbank("aishell", str(d / "m"), str(d / "f"), ["train", "dev"], num_jobs=1)
    train_units([str(d / "m/aishell_cuts_train.jsonl.gz")], str(d / "lang"), "char")
    return d


def _overrides(data: Path, exp: Path, *extra):
    return [f"data.train_cuts=[{data}/f/aishell_cuts_train.jsonl.gz]",
            f"data.valid_cuts=[{data}/f/aishell_cuts_dev.jsonl.gz]", f"data.units={data}/lang/unit.model",
            "data.max_duration=30", f"train.exp_dir={exp}", "train.log_interval=1", "train.tensorboard=false",
            "train.num_threads=1", *TINY_MODEL, *extra]


def _params(model_dir: Path):
    from safetensors.torch import load_file
    return load_file(str(model_dir / "model.safetensors"))


def test_stage1_then_stage2_then_decode(data, tmp_path):
    from xasr.decoding.methods import DECODING_METHODS, decode, options_for
    from xasr.model_dir import load_model_dir
    from xasr.trainer import train

    s1 = train(load_experiment(_overrides(data, tmp_path / "s1", "train.max_steps=6", "train.save_interval=3",
                                          "train.average_last=2")))
    assert (tmp_path / "s1/loss.png").is_file() and (tmp_path / "s1/metrics.tsv").is_file()
    assert "step" in (tmp_path / "s1/metrics.tsv").read_text().splitlines()[0]
    assert "audio per second" in (tmp_path / "s1/train.log").read_text()
    w1 = _params(s1)
    assert any(k.startswith("encoder.") for k in w1) and not any(k.startswith("llm.") for k in w1)

    llm_dir = make_tiny_llm(tmp_path / "llm")
    # the adapter fitted to the LLM's embeddings of the units, from the stage-1 model
    import json
    from xasr.bin.cli import main as cli
    stage2 = ["train.stage=2", "train.trainable=[adapter]", "model.use_llm=true", f"model.llm.path={llm_dir}"]
    assert cli(["align-adapter", *_overrides(data, tmp_path / "unused", *stage2), "--init", str(s1),
                "--out", str(tmp_path / "s2_init"), "--steps", "300", "--lr", "1e-2"]) == 0
    fit = json.loads((tmp_path / "s2_init/align.json").read_text())
    assert fit["vectors"] > 50 and fit["valid_vectors"] > 0 and fit["steps"] == 300
    assert fit["squared_error"] < fit["target_variance"]
    # --max-cuts: the fit reads a seeded subset of the training cuts (memory), all of them when fewer
    assert cli(["align-adapter", *_overrides(data, tmp_path / "unused", *stage2), "--init", str(s1),
                "--out", str(tmp_path / "s2_few"), "--steps", "40", "--max-cuts", "2"]) == 0
    few = json.loads((tmp_path / "s2_few/align.json").read_text())
    assert 0 < few["vectors"] < fit["vectors"] and few["valid_vectors"] == fit["valid_vectors"]
    aligned, _, _ = load_model_dir(str(tmp_path / "s2_init"))  # a model directory, with stage 1 unchanged
    w_init = _params(tmp_path / "s2_init")
    assert all(torch.equal(w_init[k], v) for k, v in w1.items())
    s2 = train(load_experiment(_overrides(
        data, tmp_path / "s2", "train.stage=2", "train.max_steps=4", f"train.init_from={tmp_path / 's2_init'}",
        "train.trainable=[adapter]", "model.use_llm=true", f"model.llm.path={llm_dir}")))
    w2 = _params(s2)
    assert any(k.startswith("adapter.") for k in w2)
    assert not any(k.startswith("llm.") for k in w2)  # the frozen LLM is never saved
    for k, v in w1.items():  # stage 2 trained only the adapter
        assert torch.equal(w2[k], v), k

    model, cfg, units = load_model_dir(str(s2))
    from lhotse import CutSet
    from xasr.data.dataset import AsrDataset
    cuts = CutSet.from_file(data / "f/aishell_cuts_dev.jsonl.gz").subset(first=3)
    batch = AsrDataset(None, "fbank")[cuts]
    for method in DECODING_METHODS:
        texts = decode(model, batch, method, units).texts
        assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    # stage 2 with the CTC head's draft in the prompt: the saved model decodes with drafts again
    s2d = train(load_experiment(_overrides(
        data, tmp_path / "s2d", "train.stage=2", "train.max_steps=2", f"train.init_from={tmp_path / 's2_init'}",
        "train.trainable=[adapter]", "model.use_llm=true", f"model.llm.path={llm_dir}", "model.llm_draft=ctc",
        "model.draft_noise=0.2")))
    drafted, _, units_d = load_model_dir(str(s2d))
    assert drafted.cfg.llm_draft == "ctc" and drafted.units is not None
    for method in ("llm_greedy", "llm_rescore", "llm_speculative"):
        assert len(decode(drafted, batch, method, units_d).texts) == 3
    # the LLM's rescoring without weight keeps the CTC search's best
    rescored = decode(model, batch, "llm_rescore", units, options_for(model).with_ctc_weights(1.0, 0.0))
    assert rescored.texts == decode(model, batch, "ctc_beam", units).texts
    assert all(1 <= len(nb) <= model.cfg.ctc_beam_size for nb in rescored.nbest)

    # llm_rescore's weights tuned on one set (decoded first), then used for the others
    from xasr.decoding.dataset_decode import decode_and_score
    from xasr.errors import XasrError
    dev = str(data / "f/aishell_cuts_dev.jsonl.gz")
    out = tmp_path / "decode"
    before = options_for(model)
    sums = decode_and_score(model, units, {"test": dev, "dev": dev}, ["ctc_beam", "llm_rescore"], str(out), "none",
                            tune_on="dev")
    assert [(s.set_name, s.method) for s in sums] == [("dev", "ctc_beam"), ("dev", "llm_rescore"),
                                                      ("test", "ctc_beam"), ("test", "llm_rescore")]
    tuned = json.loads((out / "rescore-weights.json").read_text())
    assert options_for(model) == before  # the tuned weights went to the later sets, not into the model
    assert 100 * sums[1].error_rate == pytest.approx(tuned["error_rate"]) and "tuned on this set" in sums[1].note
    assert sums[3].error_rate == sums[1].error_rate and not sums[3].note  # the same cuts, the tuned weights
    assert (out / "tune-dev.png").is_file() and (out / "recogs-test-llm_rescore.txt").is_file()
    with pytest.raises(XasrError, match="not among the sets"):
        decode_and_score(model, units, {"test": dev}, ["llm_rescore"], str(out), "none", tune_on="dev")

    # a model directory refuses a different frozen LLM
    import json
    from xasr.errors import XasrError
    other = make_tiny_llm(tmp_path / "llm2", seed=1)
    fp = json.loads((s2 / "frozen_parts.json").read_text())
    fp["llm"]["path"] = str(other)
    (s2 / "config.yaml").write_text((s2 / "config.yaml").read_text().replace(str(llm_dir), str(other)))
    with pytest.raises(XasrError, match="was trained with the frozen llm"):
        load_model_dir(str(s2))


def _train_cmd(data, exp, *extra):
    return [sys.executable, "-m", "xasr.bin.cli", "train", *_overrides(data, exp, *DETERMINISTIC, *extra)]


def _run_until_killed(cmd, env, log: Path, kill_at_step: int, sig: int, pause: float):
    """Start a training run, send ``sig`` once the log shows step ``kill_at_step`` (plus a pause,
    so the kill can land inside an update or a checkpoint write); the run's new log text and exit
    status come back."""
    import re

    seen = log.stat().st_size if log.is_file() else 0
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        new = log.read_text()[seen:] if log.is_file() else ""
        if any(int(s) >= kill_at_step for s in re.findall(r"step (\d+)/", new)):
            time.sleep(pause)
            proc.send_signal(sig)
            break
        time.sleep(0.02)
    status = proc.wait(timeout=300)
    return (log.read_text()[seen:] if log.is_file() else ""), status


def test_kills_at_random_steps_and_sigterm_then_a_rerun_give_the_parameters_of_an_uninterrupted_run(data, tmp_path):
    """Five faults at random steps (SIGKILL, which can land in a checkpoint write, and SIGTERM,
    which saves a checkpoint and exits with 143), then a rerun to the end: the parameters equal
    those of a run that was never interrupted."""
    import random
    import re

    steps = 60  # a tiny step takes well under 0.1 s: the faults come at least 10 steps before the end
    common = [f"train.max_steps={steps}", "train.save_interval=5", "train.num_epochs=50", "train.average_last=1"]
    env = dict(os.environ, PYTHONHASHSEED="0")
    ref = subprocess.run(_train_cmd(data, tmp_path / "ref", *common), env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]

    exp, rng, resumed_at = tmp_path / "killed", random.Random(7), []
    for i in range(5):
        sig = signal.SIGTERM if i % 2 else signal.SIGKILL
        done = max([int(c.name.split("-")[1]) for c in (exp / "checkpoints").glob("ckpt-*")
                    if not c.name.endswith(".partial")] or [0])
        at = rng.randint(done + 1, min(done + 6, steps - 10))  # five faults fit before the end
        text, status = _run_until_killed(_train_cmd(data, exp, *common), env, exp / "train.log", at, sig,
                                         rng.uniform(0.0, 0.1))
        assert not (exp / "model").exists(), f"fault {i}: the run finished before it could be stopped"
        resumed_at += [int(s) for s in re.findall(r"resumed from \S+ \(step (\d+)", text)]
        if sig == signal.SIGTERM:
            assert status == 143, text[-2000:]
            m = re.search(r"SIGTERM: training stopped at step (\d+) after saving ([^;\s]+)", text)
            assert m and int(m.group(1)) >= at and Path(m.group(2)).is_dir(), text[-2000:]
        else:
            assert status == -signal.SIGKILL
    again = subprocess.run(_train_cmd(data, exp, *common), env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(resumed_at) >= 3 and f"training done: {steps} steps" in (exp / "train.log").read_text()
    a, b = _params(tmp_path / "ref/model"), _params(exp / "model")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_non_finite_losses_are_skipped_and_a_run_of_them_stops_training_naming_the_cuts(data, tmp_path,
                                                                                    monkeypatch):
    import math

    from xasr.errors import XasrError
    from xasr.trainer import Trainer, train

    real, calls = Trainer._forward, {"n": 0}

    def poisoned(self, batch):  # the 3rd and 4th updates get a NaN loss
        out = real(self, batch)
        calls["n"] += 1
        return dict(out, loss=out["loss"] * float("nan")) if calls["n"] in (3, 4) else out

    monkeypatch.setattr(Trainer, "_forward", poisoned)
    exp = tmp_path / "nan"
    common = ["train.num_epochs=100", "train.save_interval=100", "train.max_bad_steps=3"]
    out = train(load_experiment(_overrides(data, exp, *DETERMINISTIC, "train.max_steps=5", *common)))
    log = (exp / "train.log").read_text()
    assert log.count("update skipped") == 2 and "training done: 5 steps" in log and "(2 updates skipped" in log
    assert all(torch.isfinite(v).all() for v in _params(out).values())

    monkeypatch.setattr(Trainer, "_forward", lambda self, batch: dict(o := real(self, batch),
                                                                        loss=o["loss"] * math.inf))
    with pytest.raises(XasrError, match=r"3 updates in a row had a non-finite loss.*on the cuts \S+") as e:
        train(load_experiment(_overrides(data, tmp_path / "inf", *DETERMINISTIC, "train.max_steps=5", *common)))
    from lhotse import CutSet

    ids = {c.id for c in CutSet.from_file(data / "f/aishell_cuts_train.jsonl.gz")}
    named = str(e.value).split("on the cuts ")[1].split(": check")[0].split(" and ")[0].split(", ")
    assert named and set(named) <= ids


def test_two_process_ddp_equals_single_process(data, tmp_path):
    common = ["train.max_steps=3", "train.save_interval=100", "train.num_epochs=1", "data.max_duration=40"]
    single = subprocess.run(_train_cmd(data, tmp_path / "one", *common), capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-2000:]
    torchrun = Path(sys.executable).parent / "torchrun"
    ddp = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "xasr.bin.cli", "train",
                          *_overrides(data, tmp_path / "two", *DETERMINISTIC, *common)],
                         capture_output=True, text=True)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "world size 2" in (tmp_path / "two/train.log").read_text()
    a, b = _params(tmp_path / "one/model"), _params(tmp_path / "two/model")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-5, rtol=1e-4), (k, (a[k] - b[k]).abs().max())


def test_two_processes_stop_together_at_the_time_budget(data, tmp_path):
    # every rank takes the budget's decisions (schedule refits, the stop) from rank 0's clock: a rank
    # that ended its schedule or stopped alone would leave the other waiting in a collective (the
    # timeout turns such a hang into a failure)
    torchrun = Path(sys.executable).parent / "torchrun"
    ddp = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "xasr.bin.cli", "train",
                          *_overrides(data, tmp_path / "budget", "train.max_minutes=0.05", "train.num_epochs=1000",
                                      "train.save_interval=100000")],
                         capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    log = (tmp_path / "budget/train.log").read_text()
    assert "world size 2" in log
    assert "budget reaches about step" in log  # the schedule refitted (on every rank alike) ...
    assert "training done" in log  # ... and both ranks ended at the same step
    assert (tmp_path / "budget/model/model.safetensors").is_file()


def test_select_by_valid_keeps_the_checkpoint_of_lowest_validation_loss(data, tmp_path):
    import json

    from xasr.trainer import train

    exp = tmp_path / "sel"
    out = train(load_experiment(_overrides(data, exp, *DETERMINISTIC, "train.num_epochs=4", "train.save_interval=1000",
                                           "train.keep_last=1", "train.select_by=valid", "optim.lr=0.05")))
    scored = {int(json.loads((c / "valid.json").read_text())["step"]): json.loads((c / "valid.json").read_text())
              for c in (exp / "checkpoints").glob("ckpt-*") if (c / "valid.json").is_file()}
    best = min(scored, key=lambda s: scored[s]["valid_loss"])
    # the best checkpoint survives keep_last=1, and the model directory holds its weights
    final = _params(out)
    from safetensors.torch import load_file
    kept = load_file(str(exp / "checkpoints" / f"ckpt-{best}" / "trainable.safetensors"))
    # keep_last=1 keeps the last and the best; lr 0.05 makes the last worse than an earlier one
    assert len(scored) == 2 and best < max(scored)
    assert kept and all(torch.equal(final[k], v) for k, v in kept.items())
    assert "lowest validation loss" in (exp / "train.log").read_text()


def test_resume_with_more_steps_trains_on(data, tmp_path):
    from xasr.trainer import train

    exp = tmp_path / "more"
    common = ["train.num_epochs=100", "train.save_interval=2", "train.average_last=1"]
    train(load_experiment(_overrides(data, exp, *DETERMINISTIC, "train.max_steps=4", *common)))
    train(load_experiment(_overrides(data, exp, *DETERMINISTIC, "train.max_steps=7", *common)))
    log = (exp / "train.log").read_text()
    assert "resumed from" in log and "training done: 7 steps" in log


def test_resume_refuses_a_checkpoint_of_other_trainable_parts(data, tmp_path):
    """A run whose trainable parts changed (e.g. LoRA added) must say why it cannot resume,
    not fail inside the optimiser."""
    from xasr.errors import XasrError
    from xasr.trainer import train

    exp = tmp_path / "parts"
    common = ["train.save_interval=2", "train.average_last=1", "train.max_steps=2"]
    train(load_experiment(_overrides(data, exp, *common, "train.trainable=[ctc,cformer]")))
    with pytest.raises(XasrError, match="cannot resume from it.*checkpoints"):
        train(load_experiment(_overrides(data, exp, *common, "train.max_steps=4", "train.trainable=[ctc]")))


def test_resume_refuses_other_optimizer_groups_and_the_encoder_gets_its_rate(data, tmp_path):
    from xasr.errors import XasrError
    from xasr.trainer import Trainer, train

    exp = tmp_path / "groups"
    common = ["train.save_interval=2", "train.average_last=1", "train.max_steps=2",
              "train.trainable=[encoder,ctc,cformer]"]
    trainer = Trainer(load_experiment(_overrides(data, tmp_path / "scaled", *common, "optim.encoder_lr_scale=0.25")))
    heads, encoder = trainer.optimizer.param_groups
    assert encoder["lr"] == pytest.approx(0.25 * heads["lr"])
    assert {id(p) for p in encoder["params"]} == {id(p) for p in trainer.model.encoder.parameters()}
    train(load_experiment(_overrides(data, exp, *common)))
    with pytest.raises(XasrError, match="other optimizer parameter groups.*encoder_lr_scale"):
        train(load_experiment(_overrides(data, exp, *common, "train.max_steps=4", "optim.encoder_lr_scale=0.5")))


def test_resume_skips_a_damaged_newest_checkpoint_and_refuses_pickles(data, tmp_path):
    """A checkpoint cut short (a full disk, a kill during a non-atomic copy) is skipped with a
    warning naming it; a pickled state.pt (which could run code when loaded) is refused."""
    from xasr.errors import XasrError
    from xasr.trainer import train

    exp = tmp_path / "faults"
    common = ["train.num_epochs=100", "train.save_interval=2", "train.average_last=1", "train.keep_last=3"]
    train(load_experiment(_overrides(data, exp, *DETERMINISTIC, "train.max_steps=4", *common)))
    newest = exp / "checkpoints/ckpt-4"
    (newest / "state.safetensors").write_bytes((newest / "state.safetensors").read_bytes()[:100])
    train(load_experiment(_overrides(data, exp, *DETERMINISTIC, "train.max_steps=6", *common)))
    log = (exp / "train.log").read_text()
    assert "ckpt-4 cannot be read" in log and "resumed from" in log and "ckpt-2 (step 2" in log
    assert "training done: 6 steps" in log

    for f in ("state.safetensors", "state.json"):
        (exp / "checkpoints/ckpt-6" / f).unlink()
    torch.save({"step": 6}, exp / "checkpoints/ckpt-6/state.pt")
    with pytest.raises(XasrError, match="ckpt-6 keeps its training state as a pickle"):
        train(load_experiment(_overrides(data, exp, *DETERMINISTIC, "train.max_steps=8", *common)))


def test_select_by_valid_averages_only_checkpoints_near_the_lowest_validation_loss(tmp_path):
    """An epoch end far back (validation loss 22% above the best) stays out of the average; one
    within average_within of the best joins it."""
    import json as _json
    from types import SimpleNamespace

    from xasr.trainer import VALID_JSON, Trainer

    d = tmp_path / "checkpoints"
    for step, loss in ((1268, 4.99), (2400, None), (2533, 4.09), (2600, 4.12)):
        (d / f"ckpt-{step}").mkdir(parents=True)
        if loss is not None:
            (d / f"ckpt-{step}" / VALID_JSON).write_text(_json.dumps({"step": step, "valid_loss": loss}))

    def final(average_last, within):
        train = SimpleNamespace(average_last=average_last, select_by="valid", average_within=within)
        fake = SimpleNamespace(cfg=SimpleNamespace(train=train), _ckpt_dir=lambda: d)
        fake.checkpoints = lambda: Trainer.checkpoints(fake)
        return [c.name for c in Trainer._final_checkpoints(fake)]

    assert final(3, 0.05) == ["ckpt-2533", "ckpt-2600"]
    assert final(3, 0.5) == ["ckpt-1268", "ckpt-2533", "ckpt-2600"]
    assert final(1, 0.05) == ["ckpt-2533"]
