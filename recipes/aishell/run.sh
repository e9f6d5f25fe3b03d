#!/usr/bin/env bash
# Aishell-1 recipe for xasr (Mandarin, character units).
#
# Usage:
#   bash recipes/aishell/run.sh                       # every stage, on a synthesized corpus
#   bash recipes/aishell/run.sh --stop-stage 3        # data stages only
#   bash recipes/aishell/run.sh --corpus-dir /data/aishell --nj 16 --speed-perturb true
#   bash recipes/aishell/run.sh --corpus-dir download --download true   # fetch the real corpus
#
# Stages (a finished stage leaves a .done marker and is skipped on a rerun):
#   0  corpus:    synthesize the built-in corpus (or use / download --corpus-dir)
#   1  manifests: lhotse's prepare_aishell -> data/manifests/aishell_cuts_{train,dev,test}.jsonl.gz
#   2  cuts:      filtered (speed-perturbed) cuts -> data/fbank/aishell_cuts_{train,dev,test}.jsonl.gz
#                 (with --fbank true also 80-dim fbank, lilcom; Whisper reads the audio)
#   3  units:     sentencepiece characters -> data/lang_char/unit.model
#                 and the n-gram LM (--lm-order; text: --lm-text, else the synthesized lm-text.txt) -> data/lm/
#   4-9 models, stage-1 and stage-2 training, decoding, results, benchmark (tools/model_stages.sh)
# Work happens in this recipe's directory (data/, download/, exp/, log/), whatever the caller's cwd,
# or in --work-dir DIR (several runs side by side, e.g. benchmarks/scaling.sh).
set -euo pipefail

# the recipe's own defaults; the options shared with the other recipe: tools/recipe_options.sh
# size of the synthesized training set: with the heads on layer 4, 6 h beat 4 h in the same 7.5-min
# stage 1 (dev CTC greedy CER 49.59 against 50.70, RESULTS.md; ~1.7 min more of synthesis and storing)
train_hours=6.0
# the heads read Whisper's layers 2 to 5 side by side (the contextual head's projection mixes them):
# dev CTC greedy CER 47.10 against 49.74 from layer 4 alone (itself ahead of layers 3, 5 and 6) in the
# same 7.5-min stage 1 (RESULTS.md); the sixth layer never runs
encoder_layers=2-5
decode_methods="ctc_greedy ctc_beam llm_greedy llm_rescore"  # test sets (stage 9); also: cif_greedy llm_beam llm_ctc llm_speculative llm_fast
# the tokens the LLM scores in every LLM decoding (stage 7 records it in the model's decoding.json):
# those the characters spell (same dev CER, 1.5-2x faster LLM decodings: RESULTS.md) or "full"
llm_vocab=units
# --budget full: more (and speed-perturbed) speech, longer training, a longer N-best; planned from
# the quick run's per-stage costs to stay within 2.5 h on 2 cores (RESULTS.md); it reads layer 4 alone:
# four layers of 30 h of speed-perturbed speech would store 22 GB, more than the machine's memory
full_budget=(train_hours=10 speed_perturb=true stage1_minutes=55 stage2_minutes=12 nbest=16 encoder_layers=4)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
recipe_title="Aishell-1 recipe: corpus, manifests, filtered cuts, character units."
corpus_dir_help="real Aishell-1 directory holding data_aishell/"
extra_help=""
. "$here/../../tools/recipe_options.sh"
. "$here/../../tools/recipe_lib.sh"
require_xasr
run_started

corpus=aishell
unit_type=char
vocab_size=0  # a character inventory is as large as the training text needs
lang_dir=data/lang_char
# the CTC head ties the characters espeak-ng reads alike (stage 3 writes data/lang_char/unit_classes.json)
homophone_classes=true
lm_tokens=char
. "$here/../../tools/data_stages.sh"

llm_name=gemma3-270m
encoder_model=whisper-base
exp_stage1=exp/stage1
exp_stage2=exp/stage2
normalizer=chinese_char
read -r -a stage1_overrides <<< "$stage1_opts"
read -r -a stage2_overrides <<< "$stage2_opts"
. "$here/../../tools/model_stages.sh"

log "Done (stages $stage..$stop_stage). Data: data/, models: exp/, logs: log/"
data_summary
