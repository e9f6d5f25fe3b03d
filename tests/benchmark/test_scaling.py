import json
import subprocess
import sys
from pathlib import Path

import pytest

from xasr.benchmark.scaling import parse_run_spec, plot_scaling, read_points, scaling_table
from xasr.errors import XasrError

REPO = Path(__file__).resolve().parents[2]


def _results(path: Path, hours, main: float, ctc: float, wall: float, recorded: bool = True) -> Path:
    res = {"budget": "quick", "main_method": "llm_rescore", "unit": "WER", "wall_minutes": wall,
           "sets": {"dev-clean": {"llm_rescore": {"error": main + 1, "ci95": [main - 1, main + 3], "rtf": 0.1}},
                    "test-clean": {"llm_rescore": {"error": main, "ci95": [main - 2, main + 2], "rtf": 0.1},
                                   "ctc_greedy": {"error": ctc, "ci95": [ctc - 2, ctc + 2], "rtf": 0.02},
                                   "faster-whisper-base-int8-beam5": {"error": 29.2, "ci95": [25.7, 32.8],
                                                                      "rtf": 0.2}}}}
    if recorded:
        res.update(settings={"train_hours": hours}, train_audio_hours=hours * 0.97,
                   training={"stage1": {"steps": 100 * hours}, "stage2": {"steps": 10 * hours}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res))
    return path


def test_points_come_sorted_by_hours_from_the_benchmarked_set(tmp_path):
    a = _results(tmp_path / "h4/exp/results.json", 4, 30.0, 45.0, 40.0)
    b = _results(tmp_path / "h1/exp/results.json", 1, 45.0, 60.0, 25.0)
    old = _results(tmp_path / "results/quick.json", None, 37.5, 55.3, 28.7, recorded=False)
    points = read_points([str(a), str(b), f"{old}@2.0"])
    assert [(p.name, p.audio_hours) for p in points] == [("h1", 0.97), ("quick", 2.0), ("h4", 3.88)]
    assert points[0].set_name == "test-clean" and points[0].main["error"] == 45.0 and points[0].ctc["error"] == 60.0
    assert points[2].whisper_name == "faster-whisper-base-int8-beam5" and points[2].stage_steps["stage1"] == 400
    table = scaling_table(points)
    assert table.count("\n") == 5 and "| h4 | quick | 4 | 3.88 | 40.0 | 400 / 40 | 30.00 [28.0, 32.0] |" in table
    plot_scaling(points, tmp_path / "scaling.png", "t")
    assert (tmp_path / "scaling.png").stat().st_size > 0


def test_bad_runs_are_named(tmp_path):
    old = _results(tmp_path / "quick.json", None, 37.5, 55.3, 28.7, recorded=False)
    with pytest.raises(XasrError, match="quick.json: the hours of training audio are not recorded"):
        read_points([str(old)])
    with pytest.raises(XasrError, match="no set 'test'"):
        read_points([f"{old}@2"], set_name="test")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(XasrError, match="broken.json: not a readable results JSON"):
        read_points([str(tmp_path / "broken.json")])
    with pytest.raises(XasrError, match="after @ must be a number"):
        parse_run_spec("x.json@two")


def test_the_command_writes_the_table_and_the_plot(tmp_path):
    a = _results(tmp_path / "h1/exp/results.json", 1, 45.0, 60.0, 25.0)
    b = _results(tmp_path / "h2/exp/results.json", 2, 40.0, 55.0, 30.0)
    r = subprocess.run([sys.executable, str(REPO / "benchmarks/scaling.py"), str(a), str(b), "--out-dir",
                        str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "out/scaling.md").read_text()
    assert md.startswith("Command: `python benchmarks/scaling.py ") and "| h2 |" in md
    assert (tmp_path / "out/scaling.png").stat().st_size > 0
    r = subprocess.run([sys.executable, str(REPO / "benchmarks/scaling.py"), str(tmp_path / "none.json"),
                        "--out-dir", str(tmp_path / "o2")], capture_output=True, text=True)
    assert r.returncode == 1 and "none.json: not a readable results JSON" in r.stderr


def test_the_driver_reuses_finished_runs_and_plots_them(tmp_path):
    for h, main in ((1, 45.0), (2, 40.0)):
        _results(tmp_path / f"h{h}/exp/results.json", h, main, main + 15, 20.0 + 5 * h)
    extra = _results(tmp_path / "other.json", None, 35.0, 50.0, 60.0, recorded=False)
    r = subprocess.run(["bash", str(REPO / "benchmarks/scaling.sh"), "--hours", "1 2", "--root", str(tmp_path),
                        "--recipe-opts", "--stage1-opts 'a=1 b=2'", "--extra", f"{extra}@3.5"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("done before") == 2  # no recipe run: both results exist
    md = (tmp_path / "scaling.md").read_text()
    assert "| h1 |" in md and "| h2 |" in md and "| other |" in md and (tmp_path / "scaling.png").is_file()
