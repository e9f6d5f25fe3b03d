"""Traditional-character detection in Chinese hypotheses."""
from xasr.benchmark.chinese import TRADITIONAL_TO_SIMPLIFIED, traditional_report


def test_table_maps_traditional_to_different_simplified_forms():
    assert TRADITIONAL_TO_SIMPLIFIED["這"] == "这" and TRADITIONAL_TO_SIMPLIFIED["裡"] == "里"
    assert all(t != s for t, s in TRADITIONAL_TO_SIMPLIFIED.items())
    # no simplified character is mistaken for a traditional one
    assert not set(TRADITIONAL_TO_SIMPLIFIED) & set(TRADITIONAL_TO_SIMPLIFIED.values())
    assert "著" not in TRADITIONAL_TO_SIMPLIFIED and "乾" not in TRADITIONAL_TO_SIMPLIFIED  # used in simplified too


def test_report_counts():
    hyps = {"a": "這裡有兩種方法。", "b": "这里有两种方法", "c": "Hello 這這"}
    r = traditional_report(hyps)
    # 這 (3x), 裡, 兩, 種 -> 6 traditional among 7 + 7 + 2 = 16 Han characters, in 2 utterances
    assert (r["chars"], r["cjk_chars"], r["utterances"]) == (6, 16, 2)
    assert r["examples"][0] == "這->这" and set(r["examples"]) == {"這->这", "裡->里", "兩->两", "種->种"}
    assert traditional_report({"x": "今天天气很好"})["chars"] == 0
