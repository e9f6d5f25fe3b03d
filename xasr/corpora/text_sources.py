"""Real human-written sentences for the corpora xasr synthesizes.

In: the offline Debian text packages named in shared/PLATFORM.md
  - Chinese: ``fortunes-zh`` (files ``chinese``, ``tang300``, ``song100``), simplified only;
  - English: ``sword-text-web`` read through ``diatheke`` (World English Bible),
    ``wordnet-base`` example sentences, ``fortunes`` / ``fortunes-min``.
Out: lists of :class:`Sentence` (what the voice says, and the transcript in the style of the
target corpus: Chinese characters only for Aishell-1, upper-case words with apostrophes and
spelled-out numbers for LibriSpeech).
"""
from __future__ import annotations

from xasr.errors import XasrError

import logging
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, List, Optional

logger = logging.getLogger(__name__)

FORTUNE_DIR = Path("/usr/share/games/fortunes")
WORDNET_DIR = Path("/usr/share/wordnet")
BIBLE_MODULE = "engWEB2015eb"

# Which Debian package provides each source (used in error messages).
INSTALL_HINT = {
    "fortunes-zh": "apt-get install -y fortunes-zh   (or: bash tools/setup.sh)",
    "fortunes": "apt-get install -y fortunes fortunes-min   (or: bash tools/setup.sh)",
    "wordnet-base": "apt-get install -y wordnet-base   (or: bash tools/setup.sh)",
    "sword-text-web": "apt-get install -y sword-text-web diatheke   (or: bash tools/setup.sh)",
}

# English fortune files with ordinary prose (others hold code, ascii art or lists).
ENGLISH_FORTUNE_FILES = (
    "fortunes", "literature", "wisdom", "people", "humorists", "love", "men-women",
    "politics", "science", "education", "food", "work", "pets", "kids", "miscellaneous",
    "platitudes", "law", "medicine", "sports", "news", "magic", "paradoxum", "goedel",
    "drugs", "ethnic", "cookie", "songs-poems",
)


class TextSourceError(XasrError):
    """A text package is missing or unreadable."""


@dataclass(frozen=True)
class Sentence:
    spoken: str  # text handed to the TTS engine
    transcript: str  # reference transcript in the corpus' style
    source: str  # where it came from (package name)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _read_fortune_records(path: Path) -> Iterator[List[str]]:
    """Yield the records of a fortune file as lists of lines; decoration lines are dropped."""
    text = path.read_text(encoding="utf-8", errors="replace")
    for record in text.split("\n%\n"):
        lines = []
        for line in record.splitlines():
            if _ANSI.search(line):  # titles, authors and signatures are coloured
                continue
            line = line.strip()
            if line.startswith("--") or line.startswith("——"):
                continue
            lines.append(line)
        yield lines


# ----------------------------------------------------------------------------- Chinese

_CJK = re.compile(r"[\u4e00-\u9fff]")
_ZH_SENTENCE_END = re.compile(r"[。！？；!?;…]+")
_ZH_CLAUSE_SEP = re.compile(r"[，、：,:·]+")
_ZH_DROP = re.compile(r"[“”‘’\"'《》〈〉（）()【】\[\]「」『』—\-～~ 　]")


def is_simplified_chinese(text: str) -> bool:
    """True if every character is a CJK ideograph in GB2312 (the simplified character set).

    Traditional characters that differ from their simplified forms are not in GB2312.
    """
    if not text or not all(_CJK.fullmatch(c) for c in text):
        return False
    try:
        text.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return True


def split_chinese(paragraph: str, min_chars: int, max_chars: int) -> List[str]:
    """Split running Chinese text into pieces of min..max characters (punctuation removed).

    Sentences end at 。！？；; a sentence longer than ``max_chars`` is cut at its clause
    boundaries (，、：) and clauses are packed greedily. A piece holding anything other than
    simplified Chinese characters (Latin letters, digits, traditional forms) is dropped.
    """
    out = []
    for sent in _ZH_SENTENCE_END.split(_ZH_DROP.sub("", paragraph)):
        clauses = [c for c in _ZH_CLAUSE_SEP.split(sent) if c]
        piece = ""
        for clause in clauses:
            if piece and len(piece) + len(clause) > max_chars:
                out.append(piece)
                piece = ""
            piece += clause
        if piece:
            out.append(piece)
    return [p for p in out if min_chars <= len(p) <= max_chars and is_simplified_chinese(p)]


def chinese_sentences(min_chars: int = 6, max_chars: int = 20, max_vocab: Optional[int] = None
                      ) -> List[Sentence]:
    """Usable simplified-Chinese sentences from fortunes-zh, deduplicated, in file order.

    With ``max_vocab``, only sentences written entirely with the ``max_vocab`` most frequent
    characters of the source are kept: a small corpus then sees each character often enough
    to learn it (the full source uses over 4,000 characters, many of them once).
    """
    files = [FORTUNE_DIR / n for n in ("chinese", "tang300", "song100")]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise TextSourceError(
            f"Chinese text source missing: {', '.join(missing)}. Install it with: "
            f"{INSTALL_HINT['fortunes-zh']}"
        )
    seen = set()
    result = []
    for f in files:
        for lines in _read_fortune_records(f):
            # fortune records wrap lines in mid-sentence: join before splitting
            for piece in split_chinese("".join(lines), min_chars, max_chars):
                if piece not in seen:
                    seen.add(piece)
                    result.append(Sentence(spoken=piece, transcript=piece, source="fortunes-zh"))
    if max_vocab is not None:
        counts = Counter(ch for sent in result for ch in sent.transcript)
        # ties broken by the character itself, so the choice does not depend on dict order
        common = {ch for ch, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_vocab]}
        result = [sent for sent in result if all(ch in common for ch in sent.transcript)]
    return result


# ----------------------------------------------------------------------------- English

_ONES = ("ZERO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE THIRTEEN "
         "FOURTEEN FIFTEEN SIXTEEN SEVENTEEN EIGHTEEN NINETEEN").split()
_TENS = "_ _ TWENTY THIRTY FORTY FIFTY SIXTY SEVENTY EIGHTY NINETY".split()
_SCALES = ((10**12, "TRILLION"), (10**9, "BILLION"), (10**6, "MILLION"), (1000, "THOUSAND"))
_ORDINAL_IRREGULAR = {
    "ONE": "FIRST", "TWO": "SECOND", "THREE": "THIRD", "FIVE": "FIFTH", "EIGHT": "EIGHTH",
    "NINE": "NINTH", "TWELVE": "TWELFTH",
}


def number_to_words(n: int) -> str:
    """Cardinal number in upper-case English words, LibriSpeech style (no 'AND', no hyphens)."""
    if n < 0:
        return "MINUS " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " HUNDRED" + ("" if rest == 0 else " " + number_to_words(rest))
    for value, name in _SCALES:
        if n >= value:
            high, rest = divmod(n, value)
            return number_to_words(high) + " " + name + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError("unreachable")


def ordinal_to_words(n: int) -> str:
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        last = _ORDINAL_IRREGULAR[last]
    elif last.endswith("Y"):
        last = last[:-1] + "IETH"
    else:
        last += "TH"
    return " ".join(words[:-1] + [last])


_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_GROUPED_NUMBER = re.compile(r"\b\d{1,3}(?:,\d{3})+\b")
_NUMBER = re.compile(r"\b\d+\b")
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'", "“": '"', "”": '"',
                              "—": " ", "–": " ", "-": " ", "/": " "})


def normalize_english(text: str) -> Optional[str]:
    """Normalise English text to LibriSpeech transcript style, or None if it can't be.

    Upper case; numbers and ordinals spelled out; hyphens and dashes become spaces;
    punctuation removed; apostrophes kept only inside words. Text with characters that
    have no LibriSpeech spelling (digits glued to letters, decimals, non-ASCII letters,
    symbols such as @ # $ %) is rejected.
    """
    text = text.translate(_APOSTROPHES).replace("&", " and ")
    text = _GROUPED_NUMBER.sub(lambda m: m.group(0).replace(",", ""), text)
    if re.search(r"\d[.,:]\d|\d[a-zA-Z]|[a-zA-Z]\d|[@#$%*+=<>_|\\{}~^]", _ORDINAL.sub("", text)):
        return None
    text = _ORDINAL.sub(lambda m: " " + ordinal_to_words(int(m.group(1))) + " ", text)
    text = _NUMBER.sub(lambda m: " " + number_to_words(int(m.group(0))) + " ", text)
    text = text.upper()
    if re.search(r"[^\x00-\x7f]", text):
        return None
    text = re.sub(r"[^A-Z' ]", " ", text)
    words = []
    for w in text.split():
        w = w.strip("'")
        if w:
            words.append(w)
    if not words:
        return None
    return " ".join(words)


_EN_SENTENCE = re.compile(r"(?<=[.!?;])\s+")


def _english_from_paragraph(paragraph: str, source: str, min_words: int, max_words: int
                            ) -> Iterable[Sentence]:
    for raw in _EN_SENTENCE.split(paragraph):
        raw = raw.strip()
        if re.match(r"\(?\d+[.):]", raw):  # numbered list items and references
            continue
        norm = normalize_english(raw)
        if norm is None:
            continue
        n = len(norm.split())
        if min_words <= n <= max_words:
            yield Sentence(spoken=norm.lower(), transcript=norm, source=source)


def _bible_paragraphs() -> Iterator[str]:
    if shutil.which("diatheke") is None:
        raise TextSourceError("diatheke not found. Install it with: " + INSTALL_HINT["sword-text-web"])
    proc = subprocess.run(
        ["diatheke", "-b", BIBLE_MODULE, "-f", "osis", "-k", "Gen-Rev"],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0 or "<w>" not in proc.stdout:
        raise TextSourceError(
            f"diatheke could not export module {BIBLE_MODULE} (exit {proc.returncode}: "
            f"{proc.stderr.strip()[:200]}). Install it with: {INSTALL_HINT['sword-text-web']}"
        )
    for line in proc.stdout.splitlines():
        if ":" not in line or "<w>" not in line:
            continue
        verse = line.split(": ", 1)[1]
        verse = verse.replace("</w><w>", "</w> <w>")  # adjacent words lose their space
        yield re.sub(r"<[^>]+>", "", verse)


def _wordnet_paragraphs() -> Iterator[str]:
    files = [WORDNET_DIR / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise TextSourceError(
            f"WordNet data missing: {', '.join(missing)}. Install it with: {INSTALL_HINT['wordnet-base']}"
        )
    for f in files:
        for line in f.read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue
            for example in re.findall(r'"([^"]+)"', line.split("|", 1)[1]):
                yield example


def _fortune_paragraphs() -> Iterator[str]:
    files = [FORTUNE_DIR / n for n in ENGLISH_FORTUNE_FILES if (FORTUNE_DIR / n).is_file()]
    if not files:
        raise TextSourceError(
            f"No English fortune files in {FORTUNE_DIR}. Install them with: {INSTALL_HINT['fortunes']}"
        )
    for f in files:
        for lines in _read_fortune_records(f):
            # indented lines are verse or code: keep ordinary prose only
            if any(line.startswith(("\t", "    ")) for line in lines):
                continue
            yield " ".join(lines)


def english_sentences(min_words: int = 4, max_words: int = 22) -> List[Sentence]:
    """Usable English sentences from the Bible, WordNet examples and fortunes, deduplicated.

    The three sources are interleaved so that any prefix of a shuffled list mixes them.
    """
    sources = (
        ("sword-text-web", _bible_paragraphs()),
        ("wordnet-base", _wordnet_paragraphs()),
        ("fortunes", _fortune_paragraphs()),
    )
    seen = set()
    result = []
    for name, paragraphs in sources:
        for paragraph in paragraphs:
            for s in _english_from_paragraph(paragraph, name, min_words, max_words):
                if s.transcript not in seen:
                    seen.add(s.transcript)
                    result.append(s)
    return result
