"""The energy VAD against the Silero VAD on long files: error rate of the joined transcript and
what is lost at the cuts, clean and with noise.

Usage:
  cd recipes/aishell && ../../.venv/bin/python ../../benchmarks/vad_compare.py \\
      --model-dir exp/stage2/model --models-dir ../../models \\
      --cuts data/manifests/aishell_cuts_test.jsonl.gz --utts 100 --method ctc_greedy

Files of ``--per-file`` test utterances joined with pauses drawn from 0.3-2.0 s are transcribed
whole with each detector, and each utterance alone (no VAD: the reference decoding). Conditions:
clean, and white noise at ``--snr`` dB below the speech. Per detector and condition: the error
rate of each file's joined text against its joined references (the normalizer follows the
language: CER for Chinese), that of the utterances decoded alone, the segments found, and the
deletions beyond the alone-decoding's (what segmentation lost). Prints a Markdown table and the
command; ``--out`` also writes JSON.
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--models-dir", default=None)
    p.add_argument("--cuts", required=True)
    p.add_argument("--utts", type=int, default=100)
    p.add_argument("--per-file", type=int, default=10)
    p.add_argument("--method", default="ctc_greedy")
    p.add_argument("--snr", type=float, default=10.0, help="speech-to-noise ratio of the noisy condition (dB)")
    p.add_argument("--normalizer", default=None, help="default: from the supervisions' language")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    from lhotse import CutSet

    from xasr.scoring.normalize import normalizer_for_language
    from xasr.scoring.wer import score
    from xasr.transcribe.api import Transcriber, join_texts
    from xasr.transcribe.vad import VadConfig

    rng = np.random.default_rng(0)
    cuts = [c for _, c in zip(range(args.utts), CutSet.from_file(args.cuts))]
    normalizer = args.normalizer or normalizer_for_language(cuts[0].supervisions[0].language or "en")
    audio = [c.load_audio()[0].astype(np.float32) for c in cuts]
    groups = [list(range(i, min(i + args.per_file, len(cuts)))) for i in range(0, len(cuts), args.per_file)]
    refs = {f"f{g}": join_texts(cuts[i].supervisions[0].text for i in idx) for g, idx in enumerate(groups)}
    asr = Transcriber.from_pretrained(args.model_dir, models_dir=args.models_dir, threads=2)
    asr.vad = VadConfig(enabled=False, max_segment=30.0)
    alone = asr.transcribe([(x, SR) for x in audio], method=args.method)
    alone_hyps = {f"f{g}": join_texts(alone[i].text for i in idx) for g, idx in enumerate(groups)}
    base = score(refs, alone_hyps, normalizer)
    rows = [{"condition": "-", "detector": "each utterance alone", "error": 100 * base.error_rate,
             "ci95": [100 * v for v in base.interval()], "deletions": base.num_del, "segments": len(cuts)}]
    for condition in ("clean", f"noise {args.snr:g} dB"):
        files = []
        for idx in groups:
            x, _ = join_with_pauses([audio[i] for i in idx], rng, 0.3, 2.0, SR)
            if condition != "clean":
                speech = np.concatenate([audio[i] for i in idx])
                level = np.sqrt(np.mean(speech ** 2)) * 10 ** (-args.snr / 20)
                x = x + (rng.standard_normal(len(x)) * level).astype(np.float32)
            files.append(x)
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for g, x in enumerate(files):
                paths.append(Path(tmp) / f"f{g}.wav")
                sf.write(paths[-1], np.clip(x, -1, 1), SR, subtype="PCM_16")
            for detector in ("energy", "silero"):
                asr.vad = VadConfig(detector=detector)
                res = asr.transcribe(paths, method=args.method)
                hyps = {r.id: r.text for r in res}
                s = score(refs, hyps, normalizer)
                rows.append({"condition": condition, "detector": detector, "error": 100 * s.error_rate,
                             "ci95": [100 * v for v in s.interval()], "deletions": s.num_del,
                             "segments": sum(len(r.segments) for r in res)})
    unit = base.unit
    print(f"| condition | segmentation | {unit} (%) [95% CI] | deletions | deletions beyond alone | segments |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['condition']} | {r['detector']} | {r['error']:.2f} [{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}] "
              f"| {r['deletions']} | {r['deletions'] - base.num_del:+d} | {r['segments']} |")
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print(f"\n{len(cuts)} utterances in {len(groups)} files, method {args.method}; {command}")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "method": args.method, "utterances": len(cuts),
                                              "command": command}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
