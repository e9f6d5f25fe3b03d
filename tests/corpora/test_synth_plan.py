"""Planning the synthesized corpus (no audio): dev and test fixed whatever the training size, and
the seen-voice split (training voices reading unseen text)."""
import pytest

from xasr.corpora.synth import SEEN, SplitSize, SynthConfig, default_sizes, plan_corpus
from xasr.corpora.text_sources import Sentence


def _sentences(corpus, n=4000):
    if corpus == "aishell":
        chars = "天地人和春夏秋冬山水日月风云雨雪江河湖海东南西北前后左右上下"
        return [Sentence(spoken=t, transcript=t, source="test")
                for t in ("".join(chars[(i * 7 + k * 3) % len(chars)] for k in range(6 + i % 10)) + str(i)
                          for i in range(n))]
    words = "the a of river stone light house green blue water field morning".split()
    return [Sentence(spoken=t, transcript=t, source="test")
            for t in (" ".join(words[(i + k) % len(words)] for k in range(4 + i % 8)) + f" W{i}" for i in range(n))]


def _plan(corpus, train_hours, seed=0, **kw):
    cfg = SynthConfig(corpus, "unused", seed=seed, sizes=default_sizes(corpus, train_hours, **kw))
    return plan_corpus(cfg, _sentences(corpus))


def _eval_view(speakers, utts, split):
    return ([(s.id, s.voice, s.level) for s in speakers if s.split == split],
            [(u.id, u.path, u.sentence.transcript) for u in utts if u.split == split])


@pytest.mark.parametrize("corpus", ["aishell", "librispeech"])
def test_dev_and_test_do_not_change_with_the_training_size(corpus):
    small = _plan(corpus, 0.5)
    large = _plan(corpus, 3.0)
    for split in ("dev", "test"):
        a, b = _eval_view(*small, split), _eval_view(*large, split)
        assert a == b and len(a[1]) > 0
    # the training sets do differ, and another seed gives other eval sets
    assert _eval_view(*small, "train") != _eval_view(*large, "train")
    assert _eval_view(*_plan(corpus, 0.5, seed=1), "test") != _eval_view(*small, "test")


@pytest.mark.parametrize("corpus", ["aishell", "librispeech"])
def test_the_seen_split_has_training_voices_and_unseen_text(corpus):
    speakers, utts = _plan(corpus, 1.0)
    train = {s.id: s.voice for s in speakers if s.split == "train"}
    seen = [s for s in speakers if s.split == SEEN]
    assert len(seen) == 10 and all(train[s.id] == s.voice for s in seen)
    text = {split: {u.sentence.transcript for u in utts if u.split == split}
            for split in ("train", "dev", "test", SEEN)}
    assert text[SEEN] and not text[SEEN] & (text["train"] | text["dev"] | text["test"])
    assert len({u.id for u in utts}) == len(utts) and len({u.path for u in utts}) == len(utts)
    layout = "data_aishell/wav/test_seen/" if corpus == "aishell" else "test-seen/"
    assert all(u.path.startswith(layout) for u in utts if u.split == SEEN)
    # the fixed eval sets hold about 300 utterances each
    for split in ("dev", "test"):
        assert 200 <= sum(u.split == split for u in utts) <= 450
    # no seen split when it is not asked for
    speakers, utts = _plan(corpus, 1.0, seen_hours=0)
    assert not any(s.split == SEEN for s in speakers)


def test_a_seen_split_larger_than_the_training_speakers_is_refused():
    from xasr.corpora.synth import SynthesisError

    sizes = {"train": SplitSize(0.02, 2), "dev": SplitSize(0.01, 1), "test": SplitSize(0.01, 1),
             SEEN: SplitSize(0.01, 3)}
    with pytest.raises(SynthesisError, match="seen.*3 speakers.*only 2"):
        plan_corpus(SynthConfig("aishell", "unused", sizes=sizes), _sentences("aishell", 300))
