"""Benchmark statistics and reports from fake per-utterance results with hand-computed counts."""
import json
import math

import pytest

from xasr.benchmark.report import (BenchmarkReport, Measurement, plot_benchmark, results_table, summarize,
                                   to_json, to_markdown, write_report)
from xasr.errors import XasrError
from xasr.scoring.wer import score

REFS = {"u1": "a b c d", "u2": "e f g", "u3": "h i", "u4": "k l m n o"}
# u1: 1 substitution, u2: 1 deletion, u3: 1 insertion, u4: correct -> 3 errors / 14 words
HYPS_A = {"u1": "a x c d", "u2": "e g", "u3": "h i j", "u4": "k l m n o"}
# u1: 2 substitutions, u2: 1 sub + 1 del, u3: correct, u4: 2 deletions -> 6 errors / 14 words
HYPS_B = {"u1": "a x y d", "u2": "z g", "u3": "h i", "u4": "k l m"}


def _m(system, hyps, set_name="test", decode=2.0, audio=8.0, cpu=3.0, refs=REFS):
    return Measurement(system, set_name, score(refs, hyps, "none"), decode_seconds=decode, audio_seconds=audio,
                       cpu_seconds=cpu)


def test_rows_have_hand_computed_counts_and_speeds():
    rows = summarize([_m("a", HYPS_A), _m("b", HYPS_B, decode=16.0, cpu=None)], n_resamples=500)
    a, b = rows
    assert (a.num_ref, a.num_sub, a.num_del, a.num_ins, a.num_errors) == (14, 1, 1, 1, 3)
    assert a.error_rate == pytest.approx(3 / 14)
    assert (b.num_sub, b.num_del, b.num_ins, b.num_errors) == (3, 3, 0, 6)
    assert b.error_rate == pytest.approx(6 / 14)
    assert a.kaldi_line == "%WER 21.43 [ 3 / 14, 1 ins, 1 del, 1 sub ]"
    assert (a.rtf, a.speed, a.cpu_rtf) == (pytest.approx(0.25), pytest.approx(4.0), pytest.approx(0.375))
    assert (b.rtf, b.speed, b.cpu_rtf) == (pytest.approx(2.0), pytest.approx(0.5), None)
    for r in rows:
        assert 0.0 <= r.ci_low <= r.error_rate <= r.ci_high <= 1.0
    # the first system is the reference by default; it is not tested against itself
    assert a.reference is None and a.p_bootstrap is None and a.p_mapsswe is None
    assert b.reference == "a"


def test_ci_is_a_point_when_every_utterance_has_the_same_rate():
    refs = {f"u{i}": "a b c d" for i in range(6)}
    hyps = {f"u{i}": "a b c x" for i in range(6)}  # 1 error in 4 words everywhere
    (row,) = summarize([_m("s", hyps, refs=refs)], n_resamples=200)
    assert (row.ci_low, row.error_rate, row.ci_high) == (0.25, 0.25, 0.25)


def test_identical_systems_are_not_significantly_different():
    a, b = summarize([_m("a", HYPS_A), _m("b", dict(HYPS_A))], n_resamples=300)
    assert b.p_bootstrap == 1.0  # ties count against b: b is never better
    assert (b.mapsswe_z, b.p_mapsswe) == (0.0, 1.0)


def test_clearly_better_system_has_small_p_values():
    refs = {"u1": "a b", "u2": "c d", "u3": "e f", "u4": "g h"}
    worse = {"u1": "x y", "u2": "c x", "u3": "x f", "u4": "g h"}  # errors 2, 1, 1, 0
    better = dict(refs)  # errors 0, 0, 0, 0
    ref_row, row = summarize([_m("worse", worse, refs=refs), _m("better", better, refs=refs)],
                             n_resamples=4000, seed=3)
    # d = (2, 1, 1, 0): mean 1, sample variance 2/3, z = 1 / sqrt(2/3 / 4) = sqrt(6)
    assert row.mapsswe_z == pytest.approx(math.sqrt(6))
    assert row.p_mapsswe == pytest.approx(math.erfc(math.sqrt(3)))  # = 0.0143
    # "better" is not better only on resamples that draw u4 four times: (1/4)^4 = 0.0039
    assert row.p_bootstrap < 0.02
    # and the other way round "worse" is never better than "better"
    (_, back) = summarize([_m("better", better, refs=refs), _m("worse", worse, refs=refs)], n_resamples=500)
    assert back.p_bootstrap == 1.0 and back.mapsswe_z == pytest.approx(-math.sqrt(6))


def test_reference_choice_and_errors():
    rows = summarize([_m("a", HYPS_A), _m("b", HYPS_B)], reference="b", n_resamples=100)
    assert rows[0].reference == "b" and rows[0].p_bootstrap is not None and rows[1].p_bootstrap is None
    with pytest.raises(XasrError, match="reference system 'c' is not among the systems: a, b"):
        summarize([_m("a", HYPS_A), _m("b", HYPS_B)], reference="c")
    other_refs = dict(REFS, u5="p q")
    with pytest.raises(XasrError, match="not scored on the same utterances"):
        summarize([_m("a", HYPS_A), _m("b", HYPS_B, refs=other_refs)])


def _report(rows):
    return BenchmarkReport(
        rows=rows,
        systems=[{"name": "a", "kind": "xasr", "spec": "a=xasr:m:ctc_greedy", "load_seconds": 1.25,
                  "details": {"features": "fbank"}},
                 {"name": "b", "kind": "hf-whisper", "spec": "b=hf-whisper:w", "load_seconds": 0.5, "details": {}}],
        sets=[{"name": "test", "path": "data/test", "source": "kaldi", "num_utts": 4, "audio_seconds": 8.0,
               "normalizer": "none", "unit": "WER", "language": "en", "chosen": "normalizer given"}],
        settings={"reference": "a", "threads": 2, "device": "cpu", "resamples": 200, "confidence": 0.95,
                  "command": "xasr benchmark ..."},
        notes=["a note"])


def test_markdown_table_and_json(tmp_path):
    rows = summarize([_m("a", HYPS_A), _m("b", HYPS_B, decode=16.0)], n_resamples=200)
    rows[1].notes.append("3 of 9 hypothesis Han characters are traditional forms")
    table = results_table(rows, "a").splitlines()
    assert table[0].startswith("| set | system | error % | 95% CI | sub | del | ins | ref tokens | RTF |")
    assert "p bootstrap vs a" in table[0]
    a_cells = [c.strip() for c in table[2].strip("|").split("|")]
    assert a_cells[:10] == ["test (WER)", "a", "21.43", f"{100 * rows[0].ci_low:.2f}-{100 * rows[0].ci_high:.2f}",
                            "1", "1", "1", "14", "0.250", "4.0"]
    assert a_cells[-2] == "(reference)"
    b_cells = [c.strip() for c in table[3].strip("|").split("|")]
    assert b_cells[2] == "42.86" and b_cells[4:8] == ["3", "3", "0", "14"] and b_cells[8] == "2.000"

    report = _report(rows)
    md = to_markdown(report)
    assert "| test (WER) | a | 21.43 |" in md and "**a**" in md
    assert "test a: %WER 21.43 [ 3 / 14, 1 ins, 1 del, 1 sub ]" in md
    assert "b on test: 3 of 9 hypothesis Han characters" in md and "- a note" in md
    assert "| a | xasr | `a=xasr:m:ctc_greedy` | 1.2 | features=fbank |" in md

    data = json.loads(json.dumps(to_json(report)))
    res = {r["system"]: r for r in data["results"]}
    assert res["a"]["num_errors"] == 3 and res["a"]["num_ref"] == 14
    assert res["a"]["error_rate"] == pytest.approx(3 / 14)
    assert res["b"]["reference"] == "a" and 0.0 <= res["b"]["p_bootstrap"] <= 1.0
    assert res["b"]["rtf"] == pytest.approx(2.0)
    assert data["sets"][0]["normalizer"] == "none" and data["settings"]["reference"] == "a"

    paths = write_report(report, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["results"][1]["system"] == "b"
    assert paths["markdown"].read_text().startswith("# Benchmark")
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_two_sets_and_infinite_rate(tmp_path):
    # a set whose references are empty gives an infinite rate for a system that inserts words
    rows = summarize([_m("a", HYPS_A), _m("b", HYPS_B), _m("a", {"e": "x"}, set_name="empty", refs={"e": ""}),
                      _m("b", {"e": ""}, set_name="empty", refs={"e": ""})], n_resamples=50)
    assert math.isinf(rows[2].error_rate) and rows[3].error_rate == 0.0
    out = plot_benchmark(rows, tmp_path / "p.svg")
    assert out.is_file() and out.read_text().lstrip().startswith("<?xml")
    assert json.loads(json.dumps(to_json(_report(rows))))["results"][2]["error_rate"] == "inf"
    with pytest.raises(XasrError, match="nothing to plot"):
        plot_benchmark([], tmp_path / "x.png")


def test_peak_rss_sampler_sees_memory_allocated_in_the_block():
    from xasr.benchmark.run import PeakRss

    with PeakRss(interval=0.01) as before:
        pass
    with PeakRss(interval=0.01) as rss:
        block = bytearray(200 * 1024 ** 2)  # touched: resident
        block[::4096] = b"x" * len(block[::4096])
    assert before.peak_gb > 0 and rss.peak_gb >= before.peak_gb + 0.15
    del block


def test_work_table_lists_llm_passes_per_token():
    from xasr.benchmark.report import work_table

    rows = summarize([_m("greedy", HYPS_A, set_name="a"), _m("ctc", HYPS_B, set_name="a")])
    assert work_table(rows) == []  # no figures: no table
    rows[0].peak_rss_gb, rows[0].llm_passes, rows[0].output_tokens, rows[0].accepted_draft_tokens = 1.5, 12, 6, 0
    rows[1].peak_rss_gb = 1.25
    lines = work_table(rows)
    assert "| a | greedy | 1.50 | 3.0 | 2.00 | 3.0 | 0 |" in lines  # 4 utterances, 2 s of decoding
    assert any(line.startswith("| a | ctc | 1.25 | - | - | - | - |") for line in lines)
