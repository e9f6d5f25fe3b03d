"""The LLM tokens a model's units can spell: the output vocabulary of ``llm_vocab=units``.

A small frozen LLM spends most of a decoding step on its output layer: Gemma-3-270M's has 262,144
rows of 640 (168M multiply-adds a position, against about 100M for its 18 layers), and every
LLM decoding (greedy, beam, speculative verification, N-best scoring) runs it at each position
it scores. The units are what the model learned to write, so the LLM may score just the tokens
whose text is made of the units' characters (giving up the rare correct output outside them,
e.g. a Mandarin character the training text lacks): 11,536 of Gemma's 262,144 for the
Aishell recipe's 3,900 characters. The other tokens get a logit of -inf
(:meth:`xasr.models.llm.FrozenLLM.output_vocab`), so token ids and shapes stay those of the
full vocabulary and every method runs unchanged; greedy and speculative decoding still agree,
and N-best scores are the LLM's probabilities renormalized over the allowed tokens.

A token is allowed when its text is made of characters of the unit pieces (in the LLM's target
case, ``FrozenLLM.cased``) and spaces, once the parts of a character it holds at either end are
set aside: a byte-level tokenizer (or a byte-fallback one, for characters it has no token for)
splits a character's UTF-8 bytes between tokens, and such a token's text starts or ends with
U+FFFD. The end-of-turn token is allowed too. Any text of the units is therefore tokenized within
the vocabulary (a few tokens of loose bytes come with it).
"""
from __future__ import annotations

from typing import Set

import torch

from xasr.data.units import text_pieces

PARTIAL = "\ufffd"  # what a token's text shows for the bytes of a character it holds only part of


def unit_vocabulary(llm, units) -> torch.Tensor:
    """Sorted ids (K,) of the LLM tokens the units can spell (see the module's docstring); made
    once per LLM and units (a few seconds for a 262k vocabulary) and kept with the LLM."""
    cache = llm.__dict__.setdefault("_unit_vocabularies", {})
    if id(units) not in cache:
        cache[id(units)] = (units, _spellable(llm, units))  # the units are kept: their id stays theirs
    return cache[id(units)][1]


def _spellable(llm, units) -> torch.Tensor:
    tok = llm.tokenizer
    chars: Set[str] = {" "}
    for _, text in text_pieces(units):
        chars.update(llm.cased(text))
    n = int(llm.output_layer().weight.shape[0])  # the tokens it scores (added placeholders are not among them)
    texts = tok.batch_decode([[i] for i in range(n)])
    allowed = {i for i, t in enumerate(texts) if t and set(t.strip(PARTIAL)) <= chars}
    allowed.add(llm.stop_id)
    return torch.tensor(sorted(allowed), dtype=torch.long)
