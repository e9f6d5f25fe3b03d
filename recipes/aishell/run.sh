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
#   2  features:  80-dim fbank (lilcom) -> data/fbank/aishell_cuts_{train,dev,test}.jsonl.gz
#   3  units:     sentencepiece characters -> data/lang_char/unit.model
#                 and the n-gram LM (--lm-order; text: --lm-text, else the synthesized lm-text.txt) -> data/lm/
#   4-9 models, stage-1 and stage-2 training, decoding, results, benchmark (tools/model_stages.sh)
# Work happens in this recipe's directory (data/, download/, log/), whatever the caller's cwd.
set -euo pipefail

stage=0
stop_stage=100
corpus_dir=""          # a real Aishell-1 directory (holding data_aishell/); empty: synthesize one
download=false         # with --corpus-dir: fetch the real corpus there first (needs network)
train_hours=4.0        # size of the synthesized training set (its text holds ~3.4 h: some sentences are read twice)
eval_hours=0.3         # size of its dev and of its test set (fixed: they do not change with train_hours)
seen_hours=0.1         # training voices reading unseen text (test_seen / test-seen); 0: none
synth_opts=""          # more options of xasr synth-corpus, e.g. "--reverb-share 0.3 --train-snr 5 40"
seed=0                 # seed of the synthesized corpus
nj=2                   # parallel jobs
nproc=1                # training processes on this node (torchrun, DDP); CPU threads split --nj between them
torchrun_opts=""       # torchrun's node options for multi-node training, e.g. "--nnodes 2 --node-rank 0
                       # --master-addr host0 --master-port 29500" (every node runs the same command)
speed_perturb=false    # add 0.9x / 1.1x copies of the training data
min_duration=1.0       # training cuts outside [min, max] seconds are dropped (and listed)
max_duration=20.0
lm_order=3             # n-gram LM of the CTC prefix search (stage 3; ctc_beam and llm_rescore use it); 0: none
lm_text=""             # its text files; empty: the synthesized corpus' lm-text.txt or the training transcripts
encoder_cache=true     # store the frozen encoder's outputs once, train stages 1-2 on them
stage1_opts=""         # extra hydra overrides for stage-1 training, e.g. "train.max_steps=100"
stage2_opts=""         # extra hydra overrides for stage-2 training
decode_methods="ctc_greedy ctc_beam llm_greedy llm_rescore"  # test sets (stage 9); also: cif_greedy llm_beam llm_ctc llm_speculative llm_fast
dev_methods="ctc_greedy llm_rescore"  # dev and seen-voice sets (stage 7; llm_rescore's weights are tuned on dev)
benchmark_hf=false     # stage 9 also runs Whisper base through transformers (slow on CPUs)

help_message="Usage: $0 [options]
Aishell-1 recipe: corpus, manifests, fbank features, character units.
Options (default in brackets):
  --stage N            first stage to run [$stage]
  --stop-stage N       last stage to run [$stop_stage]
  --corpus-dir DIR     real Aishell-1 directory holding data_aishell/ [synthesize one]
  --download BOOL      fetch the real corpus into --corpus-dir first [$download]
  --train-hours H      hours of the synthesized training set [$train_hours]
  --eval-hours H       hours of the synthesized dev and test sets each [$eval_hours]
  --seen-hours H       hours of training voices reading unseen text [$seen_hours]
  --synth-opts STR     more xasr synth-corpus options (training acoustics) ["$synth_opts"]
  --seed N             seed of the synthesized corpus [$seed]
  --nj N               parallel jobs [$nj]
  --nproc N            training processes on this node, through torchrun [$nproc]
  --torchrun-opts STR  torchrun node options (multi-node training) ["$torchrun_opts"]
  --speed-perturb BOOL 0.9x/1.1x copies of the training data [$speed_perturb]
  --min-duration S     shortest training cut kept [$min_duration]
  --max-duration S     longest training cut kept [$max_duration]
  --lm-order N         order of the n-gram LM, 0: none [$lm_order]
  --lm-text STR        text files of the n-gram LM [corpus lm-text.txt or training transcripts]
  --encoder-cache BOOL train on stored outputs of the frozen encoder [$encoder_cache]
  --stage1-opts STR    hydra overrides for stage-1 training ["$stage1_opts"]
  --stage2-opts STR    hydra overrides for stage-2 training ["$stage2_opts"]
  --decode-methods STR decoding methods of the test sets, in the stage-9 benchmark ["$decode_methods"]
  --dev-methods STR    decoding methods of the dev and seen-voice sets (stage 7) ["$dev_methods"]
  --benchmark-hf BOOL  also benchmark transformers Whisper base [$benchmark_hf]"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../../tools/parse_options.sh"
[ -n "$corpus_dir" ] && corpus_dir=$(realpath -m "$corpus_dir")  # relative to the caller's cwd
cd "$here"
. ../../tools/recipe_lib.sh
require_xasr
run_started

corpus=aishell
unit_type=char
vocab_size=0  # a character inventory is as large as the training text needs
lang_dir=data/lang_char
# the CTC head ties the characters espeak-ng reads alike (stage 3 writes data/lang_char/unit_classes.json)
homophone_classes=true
lm_tokens=char
. ../../tools/data_stages.sh

llm_name=gemma3-270m
encoder_model=whisper-base
exp_stage1=exp/stage1
exp_stage2=exp/stage2
normalizer=chinese_char
read -r -a stage1_overrides <<< "$stage1_opts"
read -r -a stage2_overrides <<< "$stage2_opts"
. ../../tools/model_stages.sh

log "Done (stages $stage..$stop_stage). Data: data/, models: exp/, logs: log/"
data_summary
