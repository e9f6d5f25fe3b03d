"""Benchmark several recognisers on several test sets: error rates with confidence intervals, speed, significance.

Usage:
  cd recipes/librispeech
  xasr benchmark --system ctc=xasr:exp/stage2/model:ctc_greedy cif=xasr:exp/stage2/model:cif_greedy \
      llm=xasr:exp/stage2/model:llm_greedy faster-whisper:whisper-base:int8 hf-whisper:whisper-base \
      --sets test-clean=data/fbank/librispeech_cuts_test-clean.jsonl.gz --normalizer english_word \
      --reference llm --threads 2 --out-dir exp/benchmark
  xasr benchmark --system fw5=faster-whisper:/data/whisper-small-ct2:int8:beam=5 hf=hf-whisper:/data/whisper-small \
      --sets test=data/kaldi/test --normalizer chinese_char --out-dir exp/bench-whisper
  xasr benchmark --system xasr:exp/stage2/model:llm_beam --sets dev=data/fbank/aishell_cuts_dev.jsonl.gz \
      test=data/fbank/aishell_cuts_test.jsonl.gz --normalizer dev=chinese_char test=chinese_char --max-utts 20 \
      --out-dir exp/bench-quick

System specs: [NAME=]KIND:PATH[:OPTION...]
  xasr:MODEL_DIR[:METHOD][:max_duration=S][:repeat_ngram=N]
                                                 METHOD: a decoding method of the model (default llm_greedy)
  faster-whisper:CT2_DIR[:COMPUTE_TYPE][:beam=N][:fallback]
                                                  CT2_DIR: model.bin directory, or one holding ct2/ (e.g. the
                                                  installed whisper-base); int8 and greedy by default;
                                                  fallback: Whisper's temperature fallback (not deterministic)
  hf-whisper:WHISPER_DIR[:batch=N]                a transformers Whisper directory or installed name; greedy
Test sets: NAME=PATH, PATH a lhotse cut manifest (audio needed, features optional) or a Kaldi data directory
(wav.scp + text). Whisper is forced to the set's language (zh for chinese_char, en for english_word).

Writes benchmark.md, benchmark.json, benchmark.png and recogs-/errs-/wer-/hyps-{set}-{system}.txt to --out-dir
and prints the table.
"""
from __future__ import annotations

import argparse
import shlex
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--system", "--systems", dest="systems", nargs="+", action="extend", required=True,
                   metavar="SPEC", help="[NAME=]KIND:PATH[:OPTION...] (repeatable)")
    p.add_argument("--sets", nargs="+", action="extend", required=True, metavar="NAME=PATH",
                   help="cut manifests or Kaldi data directories")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--normalizer", nargs="+", default=["auto"], metavar="NORMALIZER",
                   help="chinese_char, english_word or none for every set, or NAME=NORMALIZER per set; "
                        "auto (default): from the supervisions' language")
    p.add_argument("--language", nargs="+", default=[], metavar="CODE",
                   help="language forced on Whisper (en, zh, ...), for every set or NAME=CODE; default: from "
                        "the normalizer")
    p.add_argument("--reference", default=None, help="system the others are tested against (default: the first)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of every system (default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--models-dir", default=None, help="where the pretrained models are installed")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-utts", type=int, default=None, help="only the first N utterances of each set")
    p.add_argument("--convert-traditional", action="store_true",
                   help="convert traditional Chinese hypotheses to simplified before scoring (needs opencc); "
                        "by default they are scored as they are and reported")


def run(args: argparse.Namespace) -> int:
    from xasr.benchmark.report import results_table
    from xasr.benchmark.run import BenchmarkConfig, run_benchmark

    cfg = BenchmarkConfig(systems=args.systems, sets=args.sets, out_dir=args.out_dir, normalizers=args.normalizer,
                          languages=args.language, reference=args.reference, threads=args.threads,
                          device=args.device, models_dir=args.models_dir, resamples=args.resamples, seed=args.seed,
                          max_utts=args.max_utts, convert_traditional=args.convert_traditional,
                          command="xasr " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    report = run_benchmark(cfg)
    sys.stdout.write(results_table(report.rows, report.settings["reference"]) + "\n")
    sys.stdout.write(f"Details: {args.out_dir}/benchmark.md, benchmark.json, benchmark.png, "
                     "errs-<set>-<system>.txt\n")
    return 0
