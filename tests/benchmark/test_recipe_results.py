"""The recipe results JSON: stage times from the stage log, peak memory from the usage log, every
method on every set with its interval, from the decode summary and the benchmark report."""
import json

import pytest

from xasr.benchmark.recipe_results import peak_rss_since, read_stage_log, recipe_results, run_description
from xasr.errors import XasrError


def _write(tmp_path):
    (tmp_path / "stages.tsv").write_text(
        "100\tstart\told run\n110\t0\tStage 0: x\n"  # an earlier run is ignored
        "1000\tstart\trun.sh\n1000\t0\tStage 0: corpus\n1060\t1\tStage 1: manifests\n"
        "1090\t1\tStage 1: more\n1180\t5\tStage 5: cache\n1300\t5\tStage 5: train\n1600\t9\tStage 9: bench\n")
    (tmp_path / "usage.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"command": "train", "start": 50, "peak_rss_gb": 9.0, "children_peak_rss_gb": 0.0},  # before the run
        {"command": "train", "start": 1200, "peak_rss_gb": 2.5, "children_peak_rss_gb": 0.1},
        {"command": "synth-corpus", "start": 1001, "peak_rss_gb": 0.4, "children_peak_rss_gb": 3.1},
    ]) + "\nnot json\n")
    (tmp_path / "summary.json").write_text(json.dumps([
        {"set_name": "dev", "method": "ctc_greedy", "error_rate": 0.4, "unit": "CER", "kaldi_line": "",
         "audio_seconds": 100.0, "wall_seconds": 2.0, "note": "", "ci_low": 0.35, "ci_high": 0.45},
        {"set_name": "dev", "method": "llm_rescore", "error_rate": 0.3, "unit": "CER", "kaldi_line": "",
         "audio_seconds": 100.0, "wall_seconds": 20.0, "note": "(tuned)", "ci_low": 0.25, "ci_high": 0.36}]))
    (tmp_path / "benchmark.json").write_text(json.dumps({"results": [
        {"system": "llm_rescore", "set_name": "test", "unit": "CER", "error_rate": 0.31, "ci_low": 0.28,
         "ci_high": 0.34, "rtf": 0.2, "p_bootstrap": None, "peak_rss_gb": 1.9},
        {"system": "faster-whisper-base-int8-beam5", "set_name": "test", "unit": "CER", "error_rate": 0.2,
         "ci_low": 0.18, "ci_high": 0.23, "rtf": 0.3, "p_bootstrap": 0.0}]}))


def test_stage_minutes_come_from_the_latest_run(tmp_path):
    _write(tmp_path)
    begin, minutes = read_stage_log(tmp_path / "stages.tsv", now=1660)
    assert begin == 1000
    assert minutes == {"0": 1.0, "1": 2.0, "5": 7.0, "9": 1.0}
    assert peak_rss_since(tmp_path / "usage.jsonl", begin) == 3.1  # a worker process of the synthesis
    assert peak_rss_since(tmp_path / "usage.jsonl", None) == 9.0


def test_the_ranks_of_one_torchrun_launch_add_up(tmp_path):
    rank = {"command": "train", "args": ["train", "x=1"], "start": 10, "world_size": 2, "children_peak_rss_gb": 0.0}
    rows = [{**rank, "rank": 0, "run_id": "a", "peak_rss_gb": 1.5},
            {**rank, "rank": 1, "run_id": "a", "peak_rss_gb": 1.25},
            {**rank, "rank": 0, "run_id": "b", "peak_rss_gb": 1.0},
            {**rank, "rank": 1, "run_id": "b", "peak_rss_gb": 1.0},
            {"command": "decode", "start": 20, "peak_rss_gb": 2.5, "children_peak_rss_gb": 0.0}]
    (tmp_path / "usage.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert peak_rss_since(tmp_path / "usage.jsonl", None) == 2.75  # launch a: both ranks at once


def test_every_method_on_every_set_in_percent(tmp_path):
    _write(tmp_path)
    res = recipe_results("quick", "llm_rescore", tmp_path / "summary.json", tmp_path / "benchmark.json",
                         tmp_path / "stages.tsv", tmp_path / "usage.jsonl", now=1660)
    assert res["budget"] == "quick" and res["unit"] == "CER" and res["wall_minutes"] == 11.0
    assert res["peak_rss_gb"] == 3.1
    assert res["sets"]["dev"]["llm_rescore"] == {"error": 30.0, "ci95": [25.0, 36.0], "rtf": 0.2, "note": "(tuned)"}
    fw = res["sets"]["test"]["faster-whisper-base-int8-beam5"]
    assert fw["error"] == 20.0 and fw["ci95"] == [18.0, 23.0] and fw["rtf"] == 0.3
    assert res["sets"]["test"]["llm_rescore"]["peak_rss_gb"] == 1.9
    json.dumps(res, allow_nan=False)  # plain JSON


def test_nothing_to_report_is_an_error(tmp_path):
    with pytest.raises(XasrError, match="no results to report"):
        recipe_results("quick", "x", tmp_path / "none.json", None)


def test_the_run_description_says_what_the_run_was(tmp_path):
    import gzip

    cuts = tmp_path / "train.jsonl.gz"
    with gzip.open(cuts, "wt", encoding="utf-8") as f:
        for d in (1800.0, 3600.0, 1800.0):
            f.write(json.dumps({"id": f"c{d}", "duration": d}) + "\n")
    stage1 = tmp_path / "exp" / "stage1"
    stage1.mkdir(parents=True)
    (stage1 / "metrics.tsv").write_text("step\tepoch\tloss\tvalid_loss\n10\t1\t5.0\t\n20\t1\t\t4.5\n"
                                        "30\t2\t4.0\t\n40\t2\t\t4.75\n")
    (stage1 / "config.yaml").write_text("train:\n  max_minutes: 7.5\n  stage: 1\n")
    d = run_description(["train_hours=2", "speed_perturb=true", "nbest=", "synth_opts=--x 1"], [cuts],
                        [stage1, tmp_path / "exp" / "stage2"])  # stage 2 never ran: left out
    assert d == {"settings": {"train_hours": 2, "speed_perturb": True, "nbest": "", "synth_opts": "--x 1"},
                 "train_audio_hours": 2.0,
                 "training": {"stage1": {"steps": 40, "epochs": 2, "best_valid_loss": 4.5, "max_minutes": 7.5}}}
    _write(tmp_path)
    res = recipe_results("full", "llm_rescore", tmp_path / "summary.json", None, description=d)
    assert res["settings"]["train_hours"] == 2 and res["training"]["stage1"]["steps"] == 40
    with pytest.raises(XasrError, match="NAME=VALUE"):
        run_description(["train_hours"])
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(XasrError, match="bad.jsonl.gz: not a readable cut manifest"):
        run_description(train_cuts=[tmp_path / "bad.jsonl.gz"])
