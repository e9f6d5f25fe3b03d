"""Named text normalizers for scoring: a text goes in, a list of scoring tokens comes out.

Every score records the name of the normalizer it used, so two numbers are only compared when
they were counted the same way. Known normalizers:

  - ``chinese_char``  (unit CER): NFKC (full-width -> half-width), punctuation, symbols and
    spaces removed, then one token per CJK character; a run of other letters/digits (Latin
    words, numbers such as ``2020``) stays one upper-cased token.
  - ``english_word``  (unit WER): LibriSpeech/Whisper-like: upper case, apostrophes kept inside
    words, other punctuation removed, hyphens to spaces, numbers and ordinals spelled out the
    way the LibriSpeech transcripts of :mod:`xasr.corpora.text_sources` spell them.
  - ``none``          (unit WER): whitespace split, nothing else.

    NORMALIZERS.get("english_word")("It's 2 o'clock.")  # -> ["IT'S", "TWO", "O'CLOCK"]
    normalize("你好，世界！", "chinese_char")           # -> ["你", "好", "世", "界"]
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Callable, List

from xasr.corpora.text_sources import normalize_english, number_to_words, ordinal_to_words
from xasr.errors import XasrError
from xasr.utils.registry import Registry


class NormalizerError(XasrError):
    """An unknown normalizer or language was asked for."""


@dataclass(frozen=True)
class Normalizer:
    """A named text -> tokens function and the unit its error rate is reported in."""

    name: str
    unit: str  # "WER" or "CER"
    fn: Callable[[str], List[str]]

    def __call__(self, text: str) -> List[str]:
        return self.fn(text)


NORMALIZERS: Registry[Normalizer] = Registry("normalizer")


def _register(name: str, unit: str) -> Callable[[Callable[[str], List[str]]], Callable[[str], List[str]]]:
    def deco(fn: Callable[[str], List[str]]) -> Callable[[str], List[str]]:
        NORMALIZERS.register(name)(Normalizer(name=name, unit=unit, fn=fn))
        return fn
    return deco


def get_normalizer(name: str) -> Normalizer:
    """The registered normalizer called ``name``; an unknown name lists the known ones."""
    try:
        return NORMALIZERS.get(name)
    except KeyError as e:
        raise NormalizerError(e.args[0]) from None


def normalize(text: str, name: str) -> List[str]:
    """Scoring tokens of ``text`` under the normalizer called ``name``."""
    return get_normalizer(name)(text)


# codes, and the names lhotse's recipes write into supervisions ("Chinese" for Aishell)
_LANGUAGE_NORMALIZER = {"zh": "chinese_char", "cmn": "chinese_char", "chinese": "chinese_char", "en": "english_word",
                        "english": "english_word"}


def normalizer_for_language(language: str) -> str:
    """The normalizer name for a language code or name: ``zh`` / ``Chinese`` -> ``chinese_char``,
    ``en`` / ``English`` -> ``english_word``.

    Region or script suffixes are ignored (``zh-CN``, ``en_US``).
    """
    base = re.split(r"[-_]", language.strip().lower(), maxsplit=1)[0]
    if base not in _LANGUAGE_NORMALIZER:
        raise NormalizerError(
            f"no scoring normalizer for language {language!r}; known: "
            f"{', '.join(sorted(_LANGUAGE_NORMALIZER))} (or pass a normalizer name: "
            f"{', '.join(NORMALIZERS.names())})"
        )
    return _LANGUAGE_NORMALIZER[base]


# ----------------------------------------------------------------------------- none

@_register("none", unit="WER")
def split_whitespace(text: str) -> List[str]:
    return text.split()


# ----------------------------------------------------------------------------- Chinese

def is_cjk(ch: str) -> bool:
    """A character written one per syllable: Han ideographs, kana, Hangul syllables."""
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF        # CJK unified ideographs
        or 0x3400 <= cp <= 0x4DBF     # extension A
        or 0xF900 <= cp <= 0xFAFF     # compatibility ideographs
        or 0x20000 <= cp <= 0x3FFFF   # extensions B and later
        or 0x3040 <= cp <= 0x30FF     # hiragana, katakana
        or 0xAC00 <= cp <= 0xD7AF     # Hangul syllables
        or cp == 0x3007               # 〇 (ideographic zero)
    )


@_register("chinese_char", unit="CER")
def chinese_chars(text: str) -> List[str]:
    """One token per CJK character; a run of other letters/digits is one upper-cased token.

    Punctuation and symbols (Unicode categories P* and S*, both widths) are deleted without
    splitting the run they sit in (``U.S.`` -> ``US``, ``don't`` -> ``DONT``); whitespace never
    makes a token but does end a Latin run (``hello world`` -> ``HELLO``, ``WORLD``).
    """
    text = unicodedata.normalize("NFKC", text)
    tokens: List[str] = []
    run: List[str] = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat[0] in "PS":
            continue
        if is_cjk(ch) or ch.isspace() or cat[0] not in "LN":
            if run:
                tokens.append("".join(run).upper())
                run = []
            if is_cjk(ch):
                tokens.append(ch)
            continue
        run.append(ch)
    if run:
        tokens.append("".join(run).upper())
    return tokens


# ----------------------------------------------------------------------------- English

_ORDINAL_SUFFIX = r"(?:st|nd|rd|th)\b"
_GROUPED_NUMBER = re.compile(r"\b\d{1,3}(?:,\d{3})+\b")
_DECIMAL = re.compile(r"\b(\d+)\.(\d+)\b")
_DIGIT_SEP = re.compile(r"(\d)[,.:](\d)")
_DIGIT_LETTER = re.compile(r"(\d)(?!" + _ORDINAL_SUFFIX + r")(?=[^\W\d_])", re.IGNORECASE)
_LETTER_DIGIT = re.compile(r"([^\W\d_])(?=\d)")
_SYMBOLS = re.compile(r"[@#$*+=<>_|\\{}~^]")
_FALLBACK_ORDINAL = re.compile(r"\b(\d+)" + _ORDINAL_SUFFIX, re.IGNORECASE)
_FALLBACK_NUMBER = re.compile(r"\d+")
_NOT_WORD = re.compile(r"[^\w']|_")


def _strip_diacritics(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))


def _decimal_words(m: "re.Match[str]") -> str:
    return f" {m.group(1)} point {' '.join(m.group(2))} "


def _make_speakable(text: str) -> str:
    """Rewrite what :func:`normalize_english` would reject into something it spells out.

    ``1,000`` -> ``1000``; ``3.14`` -> ``3 point 1 4``; ``10:30`` and ``1,5`` -> two numbers;
    ``50%`` -> ``50 percent``; ``5pm`` -> ``5 pm`` (ordinals such as ``21st`` stay); other
    symbols become spaces; accents are dropped (``café`` -> ``cafe``).
    """
    text = _strip_diacritics(unicodedata.normalize("NFKC", text))
    text = _GROUPED_NUMBER.sub(lambda m: m.group(0).replace(",", ""), text)
    text = _DECIMAL.sub(_decimal_words, text)
    text = _DIGIT_SEP.sub(r"\1 \2", text)
    text = text.replace("%", " percent ")
    text = _DIGIT_LETTER.sub(r"\1 ", text)
    text = _LETTER_DIGIT.sub(r"\1 ", text)
    return _SYMBOLS.sub(" ", text)


def _fallback_words(text: str) -> List[str]:
    """Words of a text that still has letters outside ASCII (Chinese, Cyrillic, ...).

    Same steps as :func:`normalize_english`, but such letters stay in the tokens (an inserted
    foreign word is an error, not something to hide).
    """
    text = text.replace("’", "'").replace("‘", "'").replace("`", "'").replace("&", " and ")
    text = _FALLBACK_ORDINAL.sub(lambda m: " " + ordinal_to_words(int(m.group(1))) + " ", text)
    text = _FALLBACK_NUMBER.sub(lambda m: " " + number_to_words(int(m.group(0))) + " ", text)
    text = _NOT_WORD.sub(" ", text.upper())
    return [w for w in (w.strip("'") for w in text.split()) if w]


@_register("english_word", unit="WER")
def english_words(text: str) -> List[str]:
    """Upper-case words in LibriSpeech transcript style (see :func:`normalize_english`).

    Text that :func:`normalize_english` accepts is normalised by it unchanged, so references
    made by it score as themselves. Anything it would reject is first made speakable (decimals,
    times, percentages, digits glued to letters, symbols, accents); letters outside ASCII that
    remain are kept as words.
    """
    norm = normalize_english(text)
    if norm is not None:
        return norm.split()
    speakable = _make_speakable(text)
    norm = normalize_english(speakable)
    if norm is not None:
        return norm.split()
    return _fallback_words(speakable)
