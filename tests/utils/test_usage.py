"""Each xasr command appends its wall time and peak memory to $XASR_USAGE_LOG."""
import json

from xasr.bin.cli import main
from xasr.utils.usage import record_usage


def test_record_usage_appends_one_line(tmp_path):
    path = tmp_path / "log" / "usage.jsonl"
    record_usage("decode", ["--x", "1"], start=0.0, status=0, path=str(path))
    record_usage("train", [], start=0.0, status=1, path=str(path))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["command"] for r in rows] == ["decode", "train"] and rows[1]["status"] == 1
    assert rows[0]["peak_rss_gb"] > 0.01 and rows[0]["args"] == ["--x", "1"]


def test_the_cli_records_failed_commands_too(tmp_path, monkeypatch):
    path = tmp_path / "usage.jsonl"
    monkeypatch.setenv("XASR_USAGE_LOG", str(path))
    assert main(["decode", "--model-dir", str(tmp_path / "missing"), "--cuts", f"dev={tmp_path}/x.jsonl.gz",
                 "--methods", "ctc_greedy", "--out-dir", str(tmp_path / "out")]) == 1
    row = json.loads(path.read_text())
    assert row["command"] == "decode" and row["status"] == 1 and row["wall_seconds"] >= 0


def test_record_usage_marks_torchrun_ranks(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "run7")
    record_usage("train", ["train"], 0.0, 0, path=str(tmp_path / "u.jsonl"))
    monkeypatch.setenv("WORLD_SIZE", "1")
    record_usage("decode", ["decode"], 0.0, 0, path=str(tmp_path / "u.jsonl"))
    ddp, single = [json.loads(x) for x in (tmp_path / "u.jsonl").read_text().splitlines()]
    assert (ddp["rank"], ddp["world_size"], ddp["run_id"]) == (1, 2, "run7")
    assert "rank" not in single and "world_size" not in single


def test_the_training_log_and_the_usage_lines_count_memory_alike():
    from xasr.utils.usage import peak_memory, peak_rss_gb

    logged = float(peak_memory().split(" GB RSS")[0])
    assert abs(logged - peak_rss_gb()) < 0.02  # GB of 1e9 bytes in both, not GiB in one
