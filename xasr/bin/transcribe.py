"""Transcribe audio files, folders, Kaldi wav.scp lists or lhotse manifests with a trained model.

Usage:
  xasr transcribe --model-dir exp/stage2/model --out-dir exp/transcribe download/librispeech_synth/test-clean
  xasr transcribe --model-dir exp/stage2/model a.wav b.flac          # prints "<id> <text>" lines
  xasr transcribe --model-dir exp/stage2/model --method ctc_greedy --srt --out-dir out data/test/wav.scp
  xasr transcribe --model-dir exp/stage2/model --output-format all --out-dir out talk.m4a clip.webm
  find /data -name '*.mp3' | xasr transcribe --model-dir exp/stage2/model --out-dir out -
  xasr transcribe --model-dir exp/stage2/model --device cuda --max-batch-seconds 600 --out-dir exp/tr-test \\
      data/manifests/librispeech_cuts_test-clean.jsonl.gz

Inputs: audio files (anything soundfile reads, and m4a, mp4, webm, aac, ... through PyAV; any
rate and channel count: down-mixed and resampled to 16 kHz), - for a list of paths on stdin,
folders (searched recursively for audio files), Kaldi wav.scp lists (paths, or commands ending
in '|' that write an audio file to stdout), lhotse cut or recording manifests (*.jsonl.gz; cut
ids kept). Long audio is cut at pauses by a VAD (Silero, or --vad energy)
into segments of at most --max-segment seconds; audio without speech gets empty text.

With --out-dir: results.jsonl (id, path, text, duration, segments with times, timing, error),
text (Kaldi "<id> <text>"), <format>/<id>.<format> for each --output-format (txt, vtt, srt,
tsv, json or all; --srt is --output-format srt) and settings.json, written as each input
finishes. Run the same command again to resume: finished inputs are skipped, failed ones
tried again. Without --out-dir the "<id> <text>" lines go to stdout.

Exit status: 0 when every input was transcribed, 2 when some failed (each has an "error" in
results.jsonl and in the log), 1 on a usage error (bad model directory, method, ...).
"""
from __future__ import annotations

import argparse
import sys
from typing import List


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+",
                   help="audio files, folders, wav.scp lists, lhotse manifests; - reads paths from stdin, one per line")
    p.add_argument("--model-dir", required=True, help="a model directory made by `xasr train`")
    p.add_argument("--models-dir", default=None, help="where the frozen pretrained models are installed")
    p.add_argument("--out-dir", default=None, help="write results.jsonl, text (and srt/) here; resumable")
    p.add_argument("--method", default=None,
                   help="decoding method (ctc_greedy, ctc_beam, llm_greedy, llm_rescore, ...; default: the one the "
                        "model directory's decoding.json names, with its tuned weights, else llm_greedy)")
    p.add_argument("--max-batch-seconds", type=float, default=60.0, help="seconds of audio per batch")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--output-format", action="append", default=[], metavar="FORMAT",
                   help="also write <FORMAT>/<id>.<FORMAT> per input: txt, vtt, srt, tsv, json or all; "
                        "several as srt,vtt or by repeating the option (needs --out-dir)")
    p.add_argument("--srt", action="store_true", help="the same as --output-format srt")
    p.add_argument("--word-timestamps", action="store_true",
                   help="times of each word (the transcript aligned to the CTC head's posteriors) in results.jsonl "
                        "and json outputs")
    p.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming --out-dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    v = p.add_argument_group("segmentation (energy or Silero VAD; see xasr/transcribe/vad.py)")
    v.add_argument("--no-vad", action="store_true",
                   help="decode all audio, silence included (still split at --max-segment)")
    v.add_argument("--vad", default="silero", choices=["silero", "energy"],
                   help="how speech is found: the Silero neural VAD, or energy thresholds [silero]")
    v.add_argument("--max-segment", type=float, default=20.0, help="longest segment in seconds")
    v.add_argument("--vad-abs-db", type=float, default=-55.0, help="frames below this (dB full scale) are silence")
    v.add_argument("--vad-rel-db", type=float, default=40.0,
                   help="frames more than this below the loud frames are silence")
    v.add_argument("--min-silence", type=float, default=0.6, help="shorter pauses do not split (seconds)")
    v.add_argument("--vad-pad", type=float, default=0.2, help="context kept around speech (seconds)")


def run(args: argparse.Namespace) -> int:
    from xasr.errors import XasrError
    from xasr.transcribe.api import Transcriber
    from xasr.transcribe.inputs import list_inputs
    from xasr.transcribe.vad import VadConfig
    from xasr.transcribe.writers import kaldi_line

    from xasr.bin.options import check_positive
    from xasr.decoding.methods import check_methods
    from xasr.model_dir import check_model_dir

    if args.method is not None:
        check_methods([args.method], "--method")  # before the model (and its LLM) is loaded
    for option, value in (("--max-batch-seconds", args.max_batch_seconds), ("--max-segment", args.max_segment),
                          ("--min-silence", args.min_silence)):
        check_positive(value, option)
    check_positive(args.threads, "--threads", allow_zero=True)
    check_positive(args.vad_pad, "--vad-pad", allow_zero=True)
    from xasr.transcribe.writers import output_formats

    formats = output_formats([f for arg in args.output_format for f in arg.split(",") if f]
                             + (["srt"] if args.srt else []))
    if formats and not args.out_dir:
        raise XasrError(f"--{'srt' if args.srt else 'output-format'} needs --out-dir")
    inputs = _with_stdin(args.inputs)
    check_model_dir(args.model_dir, "--model-dir")
    vad = VadConfig(enabled=not args.no_vad, detector=args.vad, max_segment=args.max_segment,
                    abs_db=args.vad_abs_db, rel_db=args.vad_rel_db, min_silence=args.min_silence, pad=args.vad_pad)
    asr = Transcriber.from_pretrained(args.model_dir, models_dir=args.models_dir, device=args.device,
                                      threads=args.threads, vad=vad, word_timestamps=args.word_timestamps)
    if args.out_dir:
        s = asr.transcribe_to_dir(inputs, args.out_dir, method=args.method,
                                  max_batch_seconds=args.max_batch_seconds, formats=formats,
                                  overwrite=args.overwrite, progress=not args.no_progress)
        failed = s.failed
    else:
        failed = 0
        for t in asr.iter_transcribe(list_inputs(inputs), args.method, args.max_batch_seconds,
                                     progress=not args.no_progress):
            if t.ok:
                sys.stdout.write(kaldi_line(t.to_dict()))
                sys.stdout.flush()
            else:
                failed += 1
    return 2 if failed else 0


def _with_stdin(inputs: List[str]) -> List[str]:
    """``-`` stands for the paths on standard input, one per line (blank lines skipped)."""
    if "-" not in inputs:
        return list(inputs)
    from xasr.errors import XasrError

    listed = [line.strip() for line in sys.stdin if line.strip()]
    if not listed:
        raise XasrError("-: no paths on standard input")
    out: List[str] = []
    for item in inputs:
        out.extend(listed if item == "-" else [item])
    return out
