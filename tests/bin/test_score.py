"""xasr score: two Kaldi text files -> the recogs / errs / wer trio with PER-WORD STATS; bad
files are named."""
from __future__ import annotations

from xasr.bin.cli import main


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_score_writes_the_trio_with_per_word_stats(tmp_path, capsys):
    ref = write(tmp_path / "ref.txt", ["u1 the cat sat", "u2 a dog", "u3 hello"])
    hyp = write(tmp_path / "hyp.txt", ["u1 the bat sat down", "u2 a dog", "u3"])
    assert main(["score", str(ref), str(hyp), "--out-dir", str(tmp_path / "out"), "--name", "t"]) == 0
    out = capsys.readouterr().out
    # 6 reference words: cat->bat (sub), + down (ins), - hello (del)
    assert "%WER 50.00 [ 3 / 6, 1 ins, 1 del, 1 sub ]" in out and "95% CI" in out
    errs = (tmp_path / "out" / "errs-t.txt").read_text()
    stats = errs.split("PER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp\n")[1].splitlines()
    rows = {r.split()[0]: tuple(int(x) for x in r.split()[1:]) for r in stats}  # the normalizer upper-cases
    assert rows["CAT"] == (0, 1, 1, 0) and rows["BAT"] == (0, 1, 0, 1)
    assert rows["DOWN"] == (0, 1, 0, 1) and rows["HELLO"] == (0, 1, 1, 0)
    assert rows["THE"] == (1, 0, 1, 1) and rows["SAT"] == (1, 0, 1, 1)
    assert {r.split()[0] for r in stats[:4]} == {"CAT", "BAT", "DOWN", "HELLO"}  # most errors first
    assert (tmp_path / "out" / "wer-t.txt").read_text().startswith("%WER 50.00")
    assert "u1:\tref=['THE', 'CAT', 'SAT']" in (tmp_path / "out" / "recogs-t.txt").read_text()


def test_characters_for_chinese(tmp_path, capsys):
    ref = write(tmp_path / "ref", ["a 今天天气好"])
    hyp = write(tmp_path / "hyp", ["a 今天天汽好"])
    assert main(["score", str(ref), str(hyp), "--normalizer", "chinese_char"]) == 0
    assert "%CER 20.00 [ 1 / 5" in capsys.readouterr().out


def test_bad_files_are_named(tmp_path, capsys):
    ref = write(tmp_path / "ref.txt", ["u1 a b", "u2 c", "u1 d"])
    hyp = write(tmp_path / "hyp.txt", ["u1 a b"])
    assert main(["score", str(ref), str(hyp)]) == 1
    assert "ref.txt: line 3 repeats the id u1 of line 1" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "nope.txt"), str(hyp)]) == 1
    assert "nope.txt: no such file" in capsys.readouterr().err
    good = write(tmp_path / "good.txt", ["u1 a b"])
    extra = write(tmp_path / "extra.txt", ["u1 a b", "u9 x"])
    assert main(["score", str(good), str(extra)]) == 1
    assert "u9" in capsys.readouterr().err
    assert main(["score", str(good), str(good), "--normalizer", "klingon"]) == 1
    assert "--normalizer" in capsys.readouterr().err
