"""Back-off n-gram language models: trained from text, written and read as ARPA files, queried.

In: sentences as token lists (words, or characters for Mandarin) for :func:`train_kneser_ney`;
an ARPA file (ours, or one from KenLM / SRILM) for :meth:`NgramLM.read_arpa`.
Out: :class:`NgramLM`, whose :meth:`NgramLM.logprob` gives the natural-log probability of a token
after a history, backing off as the ARPA format defines; :meth:`NgramLM.write_arpa`.

The training is interpolated Kneser-Ney (Chen and Goodman 1998, section 3) with one absolute
discount per order, D = n1 / (n1 + 2 n2) from that order's counts of counts: the highest order
uses raw counts, lower orders the number of distinct tokens seen before the n-gram (n-grams that
start with ``<s>`` have none and keep raw counts); unigrams are interpolated with the uniform
distribution over the vocabulary plus ``<unk>``. An interpolated model is exactly a back-off
model whose back-off weight of a history is its interpolation weight, so it is written as ARPA
without approximation.
"""
from __future__ import annotations

import gzip
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from xasr.errors import XasrError

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
LN10 = math.log(10.0)
NO_PROB = -99.0  # log10 probability ARPA files give <s> (never predicted)

Ngram = Tuple[str, ...]


@dataclass
class NgramConfig:
    """An n-gram LM fused into the CTC prefix search (``ctc_beam``, and so ``llm_rescore``'s
    N-best): :class:`xasr.decoding.rescore.LmFusion`'s settings."""
    path: Optional[str] = None  # ARPA file (.arpa or .arpa.gz); a trained model directory keeps its own copy
    tokens: str = "word"  # what the LM predicts: word, or char (every character: Mandarin)
    weight: float = 0.5  # times the LM's natural-log probabilities; 0 and token_bonus 0: the LM is not used
    token_bonus: float = 1.0  # added per word (or character) of a hypothesis
    oov_penalty: float = -10.0  # instead of a log-probability for a word the LM does not know


class NgramLM:
    """An n-gram model in back-off form: ``probs[k][ngram] = (log10 p, log10 back-off)`` for the
    n-grams of order k + 1."""

    def __init__(self, probs: List[Dict[Ngram, Tuple[float, float]]]) -> None:
        if not probs or not probs[0]:
            raise XasrError("an n-gram model needs at least its unigrams")
        self.probs = probs
        self.order = len(probs)
        self._prefixes: Optional[set] = None

    # ------------------------------------------------------------------ queries
    @property
    def vocab(self) -> List[str]:
        return [w for (w,) in self.probs[0] if w not in (BOS, EOS, UNK)]

    def __contains__(self, token: str) -> bool:
        return (token,) in self.probs[0]

    def is_prefix(self, text: str) -> bool:
        """Whether some token of the vocabulary starts with ``text``."""
        if self._prefixes is None:
            self._prefixes = {w[:i] for w in self.vocab for i in range(1, len(w) + 1)}
        return text in self._prefixes

    def logprob(self, history: Sequence[str], token: str) -> float:
        """Natural-log P(token | history); a token outside the vocabulary is scored as ``<unk>``
        (-inf when the model has no ``<unk>``). Only the last ``order - 1`` history tokens count."""
        if (token,) not in self.probs[0]:
            token = UNK
            if (UNK,) not in self.probs[0]:
                return -math.inf
        h = tuple(history[len(history) - self.order + 1:]) if self.order > 1 else ()
        backoff = 0.0
        while True:
            entry = self.probs[len(h)].get(h + (token,))
            if entry is not None:
                return (entry[0] + backoff) * LN10
            ctx = self.probs[len(h) - 1].get(h) if h else None
            if ctx is not None:
                backoff += ctx[1]
            h = h[1:]

    def state(self, history: Sequence[str]) -> Ngram:
        """The part of a history the model can use (its last ``order - 1`` tokens)."""
        return tuple(history[len(history) - self.order + 1:]) if self.order > 1 else ()

    def sentence_logprob(self, tokens: Sequence[str]) -> float:
        """Natural-log P(tokens, then the end of the sentence) from the start of a sentence."""
        hist: List[str] = [BOS]
        total = 0.0
        for t in list(tokens) + [EOS]:
            total += self.logprob(hist, t)
            hist.append(t)
        return total

    def perplexity(self, sentences: Sequence[Sequence[str]]) -> float:
        """Per-token perplexity over tokenized sentences, each sentence's end counted as a token."""
        n = sum(len(t) + 1 for t in sentences)
        return math.exp(-sum(self.sentence_logprob(t) for t in sentences) / max(n, 1))

    # ------------------------------------------------------------------ files
    def write_arpa(self, path: Union[str, Path]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(tmp, "wt", encoding="utf-8") as f:
            f.write("\\data\\\n")
            for k, table in enumerate(self.probs):
                f.write(f"ngram {k + 1}={len(table)}\n")
            for k, table in enumerate(self.probs):
                f.write(f"\n\\{k + 1}-grams:\n")
                top = k + 1 == self.order
                for ng in sorted(table):
                    p, b = table[ng]
                    line = f"{p:.6f}\t{' '.join(ng)}"
                    f.write(line + ("\n" if top or b == 0.0 else f"\t{b:.6f}\n"))
            f.write("\n\\end\\\n")
        tmp.replace(path)
        return path

    @classmethod
    def read_arpa(cls, path: Union[str, Path]) -> "NgramLM":
        path = Path(path)
        if not path.is_file():
            raise XasrError(f"{path}: no such ARPA language model file")
        opener = gzip.open if path.suffix == ".gz" else open
        probs: List[Dict[Ngram, Tuple[float, float]]] = []
        declared: List[int] = []
        order = 0
        try:
            with opener(path, "rt", encoding="utf-8") as f:
                for lineno, raw in enumerate(f, 1):
                    line = raw.strip()
                    if not line:
                        continue
                    if line.startswith("ngram ") and order == 0:
                        declared.append(int(line.split("=", 1)[1]))
                        continue
                    if line.startswith("\\") and line.endswith("-grams:"):
                        order = int(line[1:line.index("-")])
                        if order != len(probs) + 1:
                            raise XasrError(f"{path}:{lineno}: section {line} out of order")
                        probs.append({})
                        continue
                    if line in ("\\data\\", "\\end\\") or order == 0:
                        continue
                    parts = line.split()
                    if len(parts) not in (order + 1, order + 2):
                        raise XasrError(f"{path}:{lineno}: expected log10 p, {order} tokens and an optional "
                                        f"back-off, got {line[:80]!r}")
                    bow = float(parts[order + 1]) if len(parts) == order + 2 else 0.0
                    probs[-1][tuple(parts[1:order + 1])] = (float(parts[0]), bow)
        except (UnicodeDecodeError, ValueError, OSError, EOFError) as e:
            raise XasrError(f"{path}: not a readable ARPA file ({e})") from e
        if not probs:
            raise XasrError(f"{path}: no n-gram sections (not an ARPA file)")
        counts = [len(t) for t in probs]
        if declared and declared != counts:
            raise XasrError(f"{path}: the header declares {declared} n-grams per order, the file holds {counts} "
                            "(truncated?)")
        return cls(probs)


def _discount(counts: Iterable[int]) -> float:
    n1 = n2 = 0
    for c in counts:
        if c == 1:
            n1 += 1
        elif c == 2:
            n2 += 1
    if n1 == 0 or n2 == 0:
        return 0.5
    return min(max(n1 / (n1 + 2 * n2), 0.05), 0.95)


def train_kneser_ney(sentences: Iterable[Sequence[str]], order: int = 3) -> NgramLM:
    """An interpolated Kneser-Ney model of ``order`` from tokenized sentences (see the module doc)."""
    if order < 1:
        raise ValueError(f"order must be at least 1, not {order}")
    top: Dict[Ngram, int] = defaultdict(int)
    n_sent = 0
    for sent in sentences:
        toks = [BOS, *sent, EOS]
        n_sent += 1
        for i in range(1, len(toks)):
            ng = tuple(toks[max(0, i - order + 1):i + 1])
            top[ng] += 1  # sentence-initial n-grams are shorter than the order: kept as they are
    if n_sent == 0:
        raise XasrError("no sentences to train a language model on")
    # counts per order: raw for the highest order and for n-grams that start with <s>, otherwise
    # the number of distinct tokens seen before the n-gram
    counts: List[Dict[Ngram, int]] = [defaultdict(int) for _ in range(order)]
    for ng, c in top.items():
        counts[len(ng) - 1][ng] += c
    # (an n-gram starting with <s> is only ever a sentence's first: its raw count is already in place)
    for k in range(order - 1, 0, -1):  # each type of order k + 1 adds one left context to its suffix
        for ng in list(counts[k]):
            counts[k - 1][ng[1:]] += 1
    vocab = {ng[0] for ng in counts[0]} | {UNK}
    vocab.discard(BOS)

    probs: List[Dict[Ngram, Tuple[float, float]]] = [dict() for _ in range(order)]
    # per history: total count and number of distinct continuations
    lower_p: Dict[Ngram, float] = {}
    for k in range(order):
        table = counts[k]
        d = _discount(table.values())
        totals: Dict[Ngram, int] = defaultdict(int)
        types: Dict[Ngram, int] = defaultdict(int)
        for ng, c in table.items():
            totals[ng[:-1]] += c
            types[ng[:-1]] += 1
        cur: Dict[Ngram, float] = {}
        if k == 0:
            total, kinds = totals[()], types[()]
            gamma = d * kinds / total
            for w in vocab:
                c = table.get((w,), 0)
                cur[(w,)] = max(c - d, 0.0) / total + gamma / len(vocab)
        else:
            for ng, c in table.items():
                h = ng[:-1]
                gamma = d * types[h] / totals[h]
                cur[ng] = max(c - d, 0.0) / totals[h] + gamma * lower_p[ng[1:]]
            for h in totals:
                # interpolation weight of the history = its back-off weight in ARPA form
                gamma = d * types[h] / totals[h]
                p, _ = probs[k - 1][h] if h in probs[k - 1] else (NO_PROB, 0.0)
                probs[k - 1][h] = (p, math.log10(gamma))
        for ng, p in cur.items():
            old_bow = probs[k][ng][1] if ng in probs[k] else 0.0
            probs[k][ng] = (math.log10(p), old_bow)
        lower_p = cur
    probs[0][(BOS,)] = (NO_PROB, probs[0].get((BOS,), (NO_PROB, 0.0))[1])
    return NgramLM(probs)


def tokenize(text: str, tokens: str) -> List[str]:
    """The LM tokens of a transcript: ``word`` (split on white space) or ``char`` (every
    character but white space)."""
    if tokens == "word":
        return text.split()
    if tokens == "char":
        return [c for c in text if not c.isspace()]
    raise ValueError(f"LM tokens must be word or char, not {tokens!r}")
