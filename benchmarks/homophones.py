"""How much of a Mandarin CER is hearing and how much is spelling: the error rate on the toned
syllables the synthesizer spoke, against the error rate on characters.

Usage:
  cd recipes/aishell && ../../.venv/bin/python ../../benchmarks/homophones.py \\
      exp/decode/recogs-dev-ctc_greedy.txt exp/decode/recogs-dev-llm_rescore.txt --out exp/homophones.json

Each character of the references and hypotheses (``recogs-*.txt`` files written by `xasr
decode`) is replaced by its reading as espeak-ng's cmn-latn-pinyin voice (the voice that read
the built-in corpus) gives it for the character alone: a toned syllable such as ``m'i35N``.
Then, per file: CER, the syllable error rate (a hypothesis character that sounds like the
reference one counts as right), the same without tones, and the share of substituted characters
that are homophones of the reference character. The gap between CER and the syllable error
rate is what choosing among homophones (the LM's job: the audio cannot tell them apart) costs.
Characters read in context can differ from their reading alone (polyphones, neutral tones), so
the syllable rate is an estimate.
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Tuple

TONE = re.compile(r"[0-9]+")


def read_recogs(path: Path) -> List[Tuple[List[str], List[str]]]:
    """[(ref tokens, hyp tokens)] of a recogs file."""
    refs: Dict[str, List[str]] = {}
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        uid, _, rest = line.partition(":\t")
        if rest.startswith("ref="):
            refs[uid] = ast.literal_eval(rest[4:])
        elif rest.startswith("hyp="):
            pairs.append((refs.pop(uid), ast.literal_eval(rest[4:])))
    return pairs


def edit_errors(ref: List[str], hyp: List[str]) -> int:
    import jiwer

    if not ref:
        return len(hyp)
    if not hyp:
        return len(ref)
    o = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return o.substitutions + o.deletions + o.insertions


def token(s: str) -> str:
    return s.replace(" ", "_")


def analyse(pairs, read: Dict[str, str]) -> dict:
    import jiwer

    n = sum(len(r) for r, _ in pairs)
    chars = sum(edit_errors(r, h) for r, h in pairs)
    syl = sum(edit_errors([token(read[c]) for c in r], [token(read[c]) for c in h]) for r, h in pairs)
    toneless = sum(edit_errors([TONE.sub("", token(read[c])) for c in r], [TONE.sub("", token(read[c])) for c in h])
                   for r, h in pairs)
    subs = homophone_subs = 0
    for r, h in pairs:
        if not r or not h:
            continue
        o = jiwer.process_words(" ".join(r), " ".join(h))
        for chunk in o.alignments[0]:
            if chunk.type == "substitute":
                for i, j in zip(range(chunk.ref_start_idx, chunk.ref_end_idx),
                                range(chunk.hyp_start_idx, chunk.hyp_end_idx)):
                    subs += 1
                    homophone_subs += read[r[i]] == read[h[j]]
    return {"chars": n, "cer": round(100 * chars / n, 2), "syllable_error_rate": round(100 * syl / n, 2),
            "toneless_syllable_error_rate": round(100 * toneless / n, 2), "substitutions": subs,
            "homophone_substitutions": homophone_subs,
            "homophone_share_of_errors": round(100 * homophone_subs / max(chars, 1), 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recogs", nargs="+", help="recogs-<set>-<method>.txt files")
    p.add_argument("--out", default=None, help="also write the table as JSON")
    args = p.parse_args()
    files = [Path(x) for x in args.recogs]
    data = {f: read_recogs(f) for f in files}
    from xasr.decoding.homophones import espeak_readings

    found = espeak_readings(c for pairs in data.values() for r, h in pairs for c in r + h)
    read = {c: found.get(c, c) for pairs in data.values() for r, h in pairs for c in r + h}  # no reading: itself
    rows = {str(f): analyse(pairs, read) for f, pairs in data.items()}
    print(f"command: {' '.join(map(shlex.quote, sys.argv))}\n")
    print("| recogs | CER | syllable error rate | without tones | homophone substitutions (share of errors) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in rows.items():
        print(f"| {name} | {r['cer']} | {r['syllable_error_rate']} | {r['toneless_syllable_error_rate']} | "
              f"{r['homophone_substitutions']} ({r['homophone_share_of_errors']}%) |")
    if args.out:
        Path(args.out).write_text(json.dumps({"command": " ".join(map(shlex.quote, sys.argv)), "rows": rows},
                                             ensure_ascii=False, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
