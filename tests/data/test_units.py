import pytest
import sentencepiece as spm

from xasr.data.units import train_units


def _write_cuts(path, texts):
    from lhotse import CutSet, MonoCut, SupervisionSegment
    from lhotse.testing.dummies import dummy_recording

    cuts = []
    for i, t in enumerate(texts):
        rec = dummy_recording(i, duration=1.0)
        cuts.append(MonoCut(f"c{i}", 0, 1.0, 0, recording=rec,
                            supervisions=[SupervisionSegment(f"s{i}", rec.id, 0, 1.0, text=t)]))
    CutSet.from_cuts(cuts).to_file(path)
    return str(path)


def test_char_units_cover_every_training_character(tmp_path):
    texts = ["今天天气很好", "我们去公园散步", "天气预报说明天下雨"]
    model = train_units([_write_cuts(tmp_path / "c.jsonl.gz", texts)], str(tmp_path / "lang"), "char")
    sp = spm.SentencePieceProcessor(model_file=str(model))
    assert [sp.id_to_piece(i) for i in range(3)] == ["<blk>", "<sos/eos>", "<unk>"]
    for t in texts:
        pieces = sp.encode(t, out_type=str)
        assert pieces == list(t)  # one unit per character, no word-boundary piece
        assert sp.decode(sp.encode(t)) == t
    assert sp.get_piece_size() == 3 + len(set("".join(texts)))
    tokens = (tmp_path / "lang/tokens.txt").read_text().splitlines()
    assert tokens[0] == "<blk> 0" and len(tokens) == sp.get_piece_size()


def test_bpe_units_round_trip(tmp_path):
    texts = [f"THE {w} SAT ON THE MAT WITH {v}" for w in ("CAT", "DOG", "BIRD", "FISH")
             for v in ("JOY", "FEAR", "CARE", "PRIDE", "GRACE")]
    model = train_units([_write_cuts(tmp_path / "c.jsonl.gz", texts)], str(tmp_path / "lang"), "bpe", 60)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    assert sp.piece_to_id("<blk>") == 0
    assert sp.get_piece_size() <= 60
    for t in texts:
        assert sp.decode(sp.encode(t)) == t


def test_no_text_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no transcript text"):
        train_units([_write_cuts(tmp_path / "c.jsonl.gz", ["", " "])], str(tmp_path / "lang"), "char")
