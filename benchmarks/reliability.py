"""A battery of bad and non-speech inputs through `xasr transcribe` with a trained model: what
each gives (words written, error, warnings, no_speech_prob), printed as a Markdown table.

Usage:
  cd recipes/aishell && ../../.venv/bin/python ../../benchmarks/reliability.py \\
      --model-dir exp/stage2/model --models-dir ../../models \\
      --cuts data/manifests/aishell_cuts_test.jsonl.gz --method llm_rescore

The clips are made in a temporary folder: 30 s of digital silence, 10 s of white noise at
-20 dB full scale, 10 s of steady music (sustained harmonic notes) and of staccato music
(decaying plucked notes), 10 s of babble (six test utterances summed), one test utterance whole
and the same file cut to a third (a truncated WAV), a 0-byte file, a text file named .wav and a
file with NaN samples. Speech clips come from --cuts, so nothing here is trained on.
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

SR = 16000


def _music(seconds: float, legato: bool, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = np.zeros_like(t)
    for i, k in enumerate(rng.integers(0, 24, size=int(seconds * 2) + 1)):
        on = (t >= i * 0.5) & (t < (i + 1) * 0.5)
        env = np.ones(on.sum()) if legato else np.exp(-np.arange(on.sum()) / SR * 6)
        for h in (1, 2, 3):
            x[on] += 0.1 / h * np.sin(2 * np.pi * 220 * 2 ** (k / 12) * h * t[on]) * env
    return x.astype(np.float32)


def make_battery(cuts_path: str, out: Path) -> dict:
    """Write the clips into ``out``; returns {name: what the clip is}."""
    from lhotse import CutSet

    cuts = [c for _, c in zip(range(7), CutSet.from_file(cuts_path))]
    speech = [c.load_audio()[0].astype(np.float32) for c in cuts]
    rng = np.random.default_rng(0)
    clips = {"silence": (np.zeros(30 * SR, np.float32), "30 s of digital silence"),
             "white_noise": ((rng.standard_normal(10 * SR) * 0.1).astype(np.float32), "10 s white noise, -20 dBFS"),
             "music_steady": (_music(10, True), "10 s sustained notes"),
             "music_staccato": (_music(10, False), "10 s plucked, decaying notes"),
             "speech": (speech[0], f"test utterance {cuts[0].id}")}
    n = 10 * SR
    babble = np.zeros(n, np.float32)
    for s in speech[1:]:
        babble += np.resize(s, n) / np.sqrt(len(speech) - 1)
    clips["babble"] = (babble, "10 s, six test utterances summed")
    for name, (x, _) in clips.items():
        sf.write(out / f"{name}.wav", x, SR, subtype="PCM_16")
    whole = (out / "speech.wav").read_bytes()
    (out / "truncated.wav").write_bytes(whole[:44 + (len(whole) - 44) // 3])
    (out / "empty.wav").write_bytes(b"")
    (out / "text.wav").write_text("not audio\n" * 50)
    nan = speech[0].copy()
    nan[100] = np.nan
    sf.write(out / "nan.wav", nan, SR, subtype="FLOAT")
    what = {k: v[1] for k, v in clips.items()}
    what.update(truncated="speech.wav cut to a third", empty="0 bytes", text="a text file named .wav",
                nan="speech.wav with one NaN sample")
    return what


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--models-dir", default=None)
    p.add_argument("--cuts", required=True, help="a test-set manifest whose utterances make the speech clips")
    p.add_argument("--method", default="ctc_greedy")
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = p.parse_args()
    from xasr.transcribe.api import Transcriber

    asr = Transcriber.from_pretrained(args.model_dir, models_dir=args.models_dir, threads=2)
    with tempfile.TemporaryDirectory() as tmp:
        what = make_battery(args.cuts, Path(tmp))
        results = asr.transcribe([Path(tmp) / f"{k}.wav" for k in what], method=args.method)
    rows = []
    print("| input | what it is | words / chars written | no_speech_prob per segment | error or warning |")
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        units = len(r.text.split()) if " " in r.text.strip() else len(r.text.replace(" ", ""))
        nsp = [round(s.no_speech_prob, 3) for s in r.segments if s.no_speech_prob is not None]
        note = r.error or "; ".join(r.warnings)
        note = note.replace(tmp, "").lstrip("/") if note else ""
        rows.append({"id": r.id, "what": what[r.id], "text": r.text, "units": units, "no_speech_prob": nsp,
                     "error": r.error, "warnings": r.warnings})
        print(f"| {r.id} | {what[r.id]} | {units if r.ok else '-'} | {nsp if r.ok else '-'} | {note[:150]} |")
    print(f"\n{' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv])}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
