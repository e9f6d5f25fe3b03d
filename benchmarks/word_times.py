"""How far word timestamps fall from where speech starts and ends, on long files made of test
utterances joined with pauses of known length.

Usage:
  cd recipes/aishell && ../../.venv/bin/python ../../benchmarks/word_times.py \\
      --model-dir exp/stage2/model --models-dir ../../models \\
      --cuts data/manifests/aishell_cuts_test.jsonl.gz --utts 60 --method llm_rescore

Each file joins ``--per-file`` test utterances with pauses drawn from 0.8-2.0 s, so where each
utterance sits in the file is known; inside an utterance, its speech runs from the first to
the last 10-ms frame within 35 dB of its loudest frame (the synthesized audio has short silent
lead-in and tail). With ``--word-timestamps`` transcription, each utterance is matched to the
segment that overlaps it most; the errors are the first word's start minus the speech onset
and the last word's end minus the speech end. Prints the median and 90th percentile of the
absolute errors (and the signed medians) for the Transcriber's word padding, or for each
``--pads LEAD:TRAIL`` (seconds added before / after each word), and the command.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from long_files import join_with_pauses  # benchmarks/long_files.py, next to this script

SR = 16000


def speech_bounds(x: np.ndarray, rel_db: float = 35.0) -> tuple:
    """(first, last) second of 10-ms frames within rel_db of the loudest one."""
    n = len(x) // 160
    e = 10 * np.log10(np.mean(x[:n * 160].reshape(n, 160) ** 2, axis=1) + 1e-12)
    on = np.nonzero(e > e.max() - rel_db)[0]
    return on[0] * 0.01, (on[-1] + 1) * 0.01


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--models-dir", default=None)
    p.add_argument("--cuts", required=True)
    p.add_argument("--utts", type=int, default=60)
    p.add_argument("--per-file", type=int, default=10)
    p.add_argument("--method", default=None)
    p.add_argument("--pads", nargs="+", default=None, metavar="LEAD:TRAIL",
                   help="seconds added before:after each word, each pair scored (default: the Transcriber's)")
    p.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = p.parse_args()
    from lhotse import CutSet

    from xasr.transcribe.api import Transcriber

    rng = np.random.default_rng(0)
    cuts = [c for _, c in zip(range(args.utts), CutSet.from_file(args.cuts))]
    truth = []  # (file index, speech start, speech end) in file seconds
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for f in range(0, len(cuts), args.per_file):
            audio = [c.load_audio()[0].astype(np.float32) for c in cuts[f:f + args.per_file]]
            joined, starts = join_with_pauses(audio, rng, 0.8, 2.0, SR)
            for x, t in zip(audio, starts):
                a, b = speech_bounds(x)
                truth.append((len(files), t + a, t + b))
            files.append(Path(tmp) / f"long{len(files)}.wav")
            sf.write(files[-1], joined, SR, subtype="PCM_16")
        asr = Transcriber.from_pretrained(args.model_dir, models_dir=args.models_dir, threads=2,
                                          word_timestamps=True)
        if args.pads:
            asr.word_pad = (0.0, 0.0)  # raw alignment; each pair applied below
        results = asr.transcribe(files, method=args.method)
    from xasr.decoding.align import pad_words

    pads = [tuple(float(v) for v in p.split(":")) for p in args.pads] if args.pads else [None]
    rows = []
    for pad in pads:
        starts, ends, unmatched = [], [], 0
        for fi, a, b in truth:
            segs = [s for s in results[fi].segments if s.words]
            overlap = [max(0.0, min(b, s.end) - max(a, s.start)) for s in segs]
            if not segs or max(overlap) <= 0:
                unmatched += 1
                continue
            seg = segs[int(np.argmax(overlap))]
            words = pad_words(seg.words, pad[0], pad[1], seg.start, seg.end) if pad else seg.words
            starts.append(words[0]["start"] - a)
            ends.append(words[-1]["end"] - b)
        starts, ends = np.array(starts), np.array(ends)
        rows.append({"lead": pad[0] if pad else None, "trail": pad[1] if pad else None,
                     "start_abs_median_s": float(np.median(np.abs(starts))),
                     "start_abs_p90_s": float(np.percentile(np.abs(starts), 90)),
                     "start_signed_median_s": float(np.median(starts)),
                     "end_abs_median_s": float(np.median(np.abs(ends))),
                     "end_abs_p90_s": float(np.percentile(np.abs(ends), 90)),
                     "end_signed_median_s": float(np.median(ends)), "matched": len(starts), "unmatched": unmatched})
    print("| lead s | trail s | start: median abs error s | p90 | signed median | end: median abs error s | p90 | "
          "signed median | matched |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['lead'] if r['lead'] is not None else 'default'} | {r['trail'] if r['trail'] is not None else ''} "
              f"| {r['start_abs_median_s']:.3f} | {r['start_abs_p90_s']:.3f} | {r['start_signed_median_s']:+.3f} "
              f"| {r['end_abs_median_s']:.3f} | {r['end_abs_p90_s']:.3f} | {r['end_signed_median_s']:+.3f} "
              f"| {r['matched']}/{len(truth)} |")
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print(f"\nmethod {args.method or asr.default_method}; {command}")
    if args.out:
        Path(args.out).write_text(json.dumps({"method": args.method or asr.default_method, "rows": rows,
                                              "utterances": len(truth), "command": command}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
