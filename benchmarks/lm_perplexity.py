"""How well the recipe's language models know a set's transcripts: the n-gram LM of the CTC prefix
search against the frozen LLM read as a plain text LM (no speech, no prompt).

Both are scored on the same units: per transcript, the log-probability of its text and then of its
end (the n-gram's ``</s>``, the LLM's end-of-sequence token after its beginning-of-sequence token),
summed over the set and divided by the number of LM tokens plus one per transcript, the way
``xasr train-lm`` reports perplexity. The LLM's sub-word tokens are thereby counted per character
(``--tokens char``) or word, so the two figures compare. Prints a Markdown table and the command.

Usage:
  cd recipes/aishell
  python ../../benchmarks/lm_perplexity.py --arpa data/lm/char3.arpa --tokens char \
      --llm ../../models/gemma3-270m --cuts dev=data/fbank/aishell_cuts_dev.jsonl.gz
  (LibriSpeech: --arpa data/lm/word3.arpa --tokens word --llm ../../models/smollm2-135m-instruct
  --case lower, as its model reads the upper-case transcripts)
"""
from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path
from typing import List


def llm_logprob(model, tokenizer, text: str) -> float:
    """Natural-log P(text, then the end of sequence) under a causal LM, from its start token."""
    import torch

    ids = tokenizer(text, add_special_tokens=False).input_ids
    seq = torch.tensor([[tokenizer.bos_token_id] + ids + [tokenizer.eos_token_id]])
    with torch.no_grad():
        logp = torch.log_softmax(model(seq).logits[0, :-1].float(), dim=-1)
    return float(logp.gather(1, seq[0, 1:, None]).sum())


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cuts", nargs="+", required=True, help="NAME=MANIFEST of the sets to score")
    p.add_argument("--arpa", required=True, help="the n-gram LM (ARPA)")
    p.add_argument("--tokens", choices=("char", "word"), required=True, help="the n-gram LM's tokens")
    p.add_argument("--llm", required=True, help="a Hugging Face causal-LM directory")
    p.add_argument("--case", choices=("keep", "lower"), default="keep",
                   help="the transcripts as the LLM reads them, the model's model.llm.target_case (lower for "
                        "SmolLM2 on upper-case LibriSpeech)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import torch
    from lhotse import CutSet
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xasr.data.dataset import batch_texts
    from xasr.decoding.ngram import NgramLM, tokenize

    sets = []
    for spec in args.cuts:
        name, _, path = spec.partition("=")
        if not name or not path:
            sys.exit(f"--cuts {spec}: give NAME=MANIFEST")
        if not Path(path).is_file():
            sys.exit(f"--cuts {spec}: no such file {path}")
        sets.append((name, path))
    if not Path(args.arpa).is_file():
        sys.exit(f"--arpa {args.arpa}: no such file")
    torch.set_num_threads(args.threads)
    if not Path(args.llm, "config.json").is_file():
        sys.exit(f"--llm {args.llm}: not a model directory (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(args.llm)
    model = AutoModelForCausalLM.from_pretrained(args.llm, dtype=torch.float32).eval()
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        sys.exit(f"--llm {args.llm}: its tokenizer has no beginning or end of sequence token")
    ngram = NgramLM.read_arpa(args.arpa)

    print(f"Command: python benchmarks/lm_perplexity.py {shlex.join(argv)}\n")
    print(f"| set | transcripts | {args.tokens}s + ends | n-gram ({Path(args.arpa).name}) perplexity "
          f"| LLM ({Path(args.llm).name}) perplexity |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, path in sets:
        texts = batch_texts(CutSet.from_file(path))
        toks = [tokenize(t, args.tokens) for t in texts]
        n = sum(len(t) + 1 for t in toks)
        llm = sum(llm_logprob(model, tokenizer, t.lower() if args.case == "lower" else t) for t in texts)
        print(f"| {name} | {len(texts)} | {n} | {ngram.perplexity(toks):.1f} | {math.exp(-llm / n):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
