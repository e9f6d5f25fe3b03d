"""Training transcripts -> sentencepiece text units (characters for Chinese, BPE for English).

In: one or more cut manifests (their supervision texts).
Out: ``<lang_dir>/unit.model`` and ``unit.vocab`` (sentencepiece), ``tokens.txt``
(``piece id`` per line, icefall style) and ``transcript.txt`` (the training text).

Ids 0, 1, 2 are always ``<blk>`` (the CTC blank), ``<sos/eos>`` and ``<unk>``, so every model
built on the units can rely on them.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Sequence, Tuple

logger = logging.getLogger(__name__)

BLANK, SOS_EOS, UNK = "<blk>", "<sos/eos>", "<unk>"
FIRST_TEXT_UNIT = 3  # the first id of a piece of text (ids 0-2 are the three above)


def text_pieces(units) -> List[Tuple[int, str]]:
    """(id, text) of each unit that writes text (its word-boundary mark as a space): the fixed
    specials, control, unknown, unused and ``<...>`` symbol pieces are left out."""
    out = []
    for i in range(FIRST_TEXT_UNIT, units.get_piece_size()):
        piece = units.id_to_piece(i)
        if units.is_control(i) or units.is_unknown(i) or units.is_unused(i) or (
                piece.startswith("<") and piece.endswith(">")):
            continue
        out.append((i, piece.replace("\u2581", " ")))
    return out
MODEL_NAME = "unit.model"


def read_texts(cut_paths: Sequence[str]) -> List[str]:
    from lhotse import CutSet

    texts = []
    for p in cut_paths:
        for c in CutSet.from_file(p):
            t = " ".join(s.text for s in c.supervisions if s.text).strip()
            if t:
                texts.append(t)
    return texts


def train_units(cut_paths: Sequence[str], lang_dir: str, model_type: str = "bpe",
                vocab_size: int = 500) -> Path:
    """Train a sentencepiece model on the transcripts; returns the model path.

    model_type "char": one unit per character (Chinese; no word-boundary pieces);
    "bpe": byte-pair units with ``vocab_size`` pieces (English). If the text is too small
    for ``vocab_size``, sentencepiece is allowed to stop below it (logged).
    """
    import sentencepiece as spm

    if model_type not in ("char", "bpe", "unigram"):
        raise ValueError(f"model_type must be char, bpe or unigram, not {model_type!r}")
    texts = read_texts(cut_paths)
    if not texts:
        raise ValueError(f"no transcript text in {', '.join(map(str, cut_paths))}")
    out = Path(lang_dir)
    out.mkdir(parents=True, exist_ok=True)
    transcript = out / "transcript.txt"
    transcript.write_text("\n".join(texts) + "\n", encoding="utf-8")

    prefix = out / "unit.partial"
    kwargs = dict(
        input=str(transcript), model_prefix=str(prefix), model_type=model_type,
        character_coverage=1.0, input_sentence_size=10_000_000, shuffle_input_sentence=True,
        user_defined_symbols=[BLANK, SOS_EOS], unk_id=2, bos_id=-1, eos_id=-1,
        num_threads=os.cpu_count() or 1, minloglevel=2,
    )
    if model_type == "char":
        n_chars = len(set("".join(texts).replace(" ", "")))
        kwargs.update(vocab_size=n_chars + 4, hard_vocab_limit=False, use_all_vocab=True,
                      add_dummy_prefix=False)
    else:
        kwargs.update(vocab_size=vocab_size, hard_vocab_limit=False)
    spm.SentencePieceTrainer.train(**kwargs)
    for ext in ("model", "vocab"):
        os.replace(f"{prefix}.{ext}", out / f"unit.{ext}")
    sp = spm.SentencePieceProcessor(model_file=str(out / MODEL_NAME))
    assert sp.id_to_piece(0) == BLANK and sp.id_to_piece(1) == SOS_EOS and sp.id_to_piece(2) == UNK
    (out / "tokens.txt").write_text(
        "".join(f"{sp.id_to_piece(i)} {i}\n" for i in range(sp.get_piece_size())), encoding="utf-8")
    if model_type == "bpe" and sp.get_piece_size() < vocab_size:
        logger.warning("%s: the text supports only %d BPE units (asked for %d)", out, sp.get_piece_size(),
                       vocab_size)
    logger.info("%s: %s units, %d pieces, from %d sentences", out / MODEL_NAME, model_type,
                sp.get_piece_size(), len(texts))
    return out / MODEL_NAME
