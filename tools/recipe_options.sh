#!/usr/bin/env bash
# The options the Aishell and LibriSpeech recipes share, their help text, and the parsing of the
# command line (tools/parse_options.sh). Source it from a recipe's run.sh after setting:
#   here              the recipe's directory
#   recipe_title      the help's first line
#   corpus_dir_help   what --corpus-dir holds
#   train_hours, decode_methods   the recipe's defaults of those options
#   extra_help        help lines of the recipe's own options (declared before sourcing), or ""
#   full_budget       NAME=VALUE defaults that --budget full sets (an array)
# and any shared option's recipe-specific default. On return the options hold the command
# line's values, --corpus-dir is absolute, and the shell is in --work-dir or the recipe's directory.

# --budget quick|full is read first: it chooses defaults, and an option given on the command
# line still wins over them
budget=quick
_ro_prev=""
for _ro_arg in "$@"; do
  [ "$_ro_prev" = --budget ] && budget=$_ro_arg
  case "$_ro_arg" in --budget=*) budget=${_ro_arg#--budget=} ;; esac
  _ro_prev=$_ro_arg
done
case "$budget" in
  quick|full) ;;
  *) echo "$0: --budget takes quick or full, not '$budget'" >&2; exit 2 ;;
esac

stage=0
stop_stage=100
work_dir=""            # where data/, download/, exp/ and log/ go; empty: the recipe's directory
corpus_dir=""          # a real corpus directory (what it holds: corpus_dir_help); empty: synthesize one
download=false         # with --corpus-dir: fetch the real corpus there first (needs network)
eval_hours=0.3         # size of the synthesized dev and of its test set (fixed: they do not change with train_hours)
seen_hours=0.1         # training voices reading unseen text (test_seen / test-seen); 0: none
synth_opts=""          # more options of xasr synth-corpus, e.g. "--reverb-share 0.3 --train-snr 5 40"
seed=0                 # seed of the synthesized corpus
nj=2                   # parallel jobs
nproc=1                # training processes on this node (torchrun, DDP); CPU threads split --nj between them
torchrun_opts=""       # torchrun's node options for multi-node training, e.g. "--nnodes 2 --node-rank 0
                       # --master-addr host0 --master-port 29500" (every node runs the same command)
speed_perturb=false    # add 0.9x / 1.1x copies of the training data
fbank=false            # stage 2 stores 80-dim fbank; false: it only filters (and perturbs) the cuts, since the
                       # Whisper encoder reads the audio (a fbank encoder then extracts them as it reads)
min_duration=1.0       # training cuts outside [min, max] seconds are dropped (and listed)
max_duration=20.0
lm_order=3             # n-gram LM of the CTC prefix search (stage 3; ctc_beam and llm_rescore use it); 0: none
lm_text=""             # its text files; empty: the synthesized corpus' lm-text.txt or the training transcripts
encoder_cache=true     # store the frozen encoder's outputs once, train stages 1-2 on them
encoder_top=0          # stage 1 also adapts the top N Whisper layers (stored: the outputs of the layers below)
encoder_layers=${encoder_layers:-}  # the Whisper layers kept (the recipe's default; empty: all)
stage1_opts=""         # extra hydra overrides for stage-1 training, e.g. "train.max_steps=100"
stage2_opts=""         # extra hydra overrides for stage-2 training
dev_methods="ctc_greedy llm_rescore"  # dev and seen-voice sets (stage 7; llm_rescore's weights are tuned on dev)
benchmark_hf=false     # stage 9 also runs Whisper base through transformers (slow on CPUs)
stage1_minutes=""      # stage-1 training budget in minutes (train.max_minutes); empty: the experiment config's
stage2_minutes=""      # the same for stage 2
nbest=""               # N-best of the CTC search that llm_rescore rescores (model.ctc_beam_size); empty: the config's
if [ "$budget" = full ]; then
  for _ro_kv in ${full_budget[@]+"${full_budget[@]}"}; do
    declare -p "${_ro_kv%%=*}" >/dev/null 2>&1 || { echo "$0: full_budget sets an unknown option ${_ro_kv%%=*}" >&2; exit 2; }
    printf -v "${_ro_kv%%=*}" '%s' "${_ro_kv#*=}"
  done
fi

help_message="Usage: $0 [options]
$recipe_title
Options (default in brackets):
  --budget NAME        the time budget, quick or full; full sets ${full_budget[*]:-nothing} [$budget]
                       (quick: about half an hour on 2 cores; the defaults below are the chosen budget's)
  --stage N            first stage to run [$stage]
  --stop-stage N       last stage to run [$stop_stage]
  --work-dir DIR       where data/, download/, exp/, log/ go [the recipe's directory]
  --corpus-dir DIR     $corpus_dir_help [synthesize one]
  --download BOOL      fetch the real corpus into --corpus-dir first [$download]
  --train-hours H      hours of the synthesized training set [$train_hours]
  --eval-hours H       hours of the synthesized dev and test sets each [$eval_hours]
  --seen-hours H       hours of training voices reading unseen text [$seen_hours]
  --synth-opts STR     more xasr synth-corpus options (training acoustics) [\"$synth_opts\"]
  --seed N             seed of the synthesized corpus [$seed]
  --nj N               parallel jobs [$nj]
  --nproc N            training processes on this node, through torchrun [$nproc]
  --torchrun-opts STR  torchrun node options (multi-node training) [\"$torchrun_opts\"]
  --speed-perturb BOOL 0.9x/1.1x copies of the training data [$speed_perturb]
  --fbank BOOL         store fbank features in stage 2 (the Conformer reads them; Whisper reads audio) [$fbank]
  --min-duration S     shortest training cut kept [$min_duration]
  --max-duration S     longest training cut kept [$max_duration]
  --lm-order N         order of the n-gram LM, 0: none [$lm_order]
  --lm-text STR        text files of the n-gram LM [corpus lm-text.txt or training transcripts]
  --encoder-cache BOOL train on stored outputs of the frozen encoder [$encoder_cache]
  --encoder-layers N   the heads read Whisper's N-th layer (the layers above are dropped), empty: all;
                       A-B: layers A to B side by side (the contextual head mixes them) [$encoder_layers]
  --encoder-top N      stage 1 also trains the top N Whisper layers, at 0.1x the learning rate [$encoder_top]
                       (trained stages are not redone: change either with a new --work-dir or without exp/)
  --stage1-opts STR    hydra overrides for stage-1 training [\"$stage1_opts\"]
  --stage2-opts STR    hydra overrides for stage-2 training [\"$stage2_opts\"]
  --decode-methods STR decoding methods of the test sets, in the stage-9 benchmark [\"$decode_methods\"]
  --dev-methods STR    decoding methods of the dev and seen-voice sets (stage 7) [\"$dev_methods\"]
  --stage1-minutes M   stage-1 training budget, empty: the config's [$stage1_minutes]
  --stage2-minutes M   stage-2 training budget, empty: the config's [$stage2_minutes]
  --nbest N            N-best that llm_rescore rescores, empty: the config's [$nbest]
  --llm-vocab STR      tokens the LLM may write: units (those the units spell, faster) or full [$llm_vocab]
  --benchmark-hf BOOL  also benchmark transformers Whisper base [$benchmark_hf]${extra_help:+
$extra_help}"

. "$here/../../tools/parse_options.sh"
[ -n "$corpus_dir" ] && corpus_dir=$(realpath -m "$corpus_dir")  # relative to the caller's cwd
case "$encoder_layers" in
  ''|[1-9]|[1-9][0-9]) ;;
  [1-9]-[1-9]|[1-9]-[1-9][0-9]|[1-9][0-9]-[1-9][0-9])
    if [ "${encoder_layers%-*}" -gt "${encoder_layers#*-}" ]; then
      echo "$0: --encoder-layers $encoder_layers: the first layer comes after the last" >&2; exit 2
    fi
    if [ "$encoder_top" != 0 ]; then
      echo "$0: --encoder-layers $encoder_layers with --encoder-top $encoder_top: the top layers train or several layers are read, not both" >&2
      exit 2
    fi ;;
  *) echo "$0: --encoder-layers takes a number of layers (1 or more) or a range A-B, not '$encoder_layers'" >&2; exit 2 ;;
esac
case "$llm_vocab" in
  full|units) ;;
  *) echo "$0: --llm-vocab takes full or units, not '$llm_vocab'" >&2; exit 2 ;;
esac
if [ -n "$work_dir" ]; then
  mkdir -p "$work_dir" || { echo "$0: cannot make --work-dir $work_dir" >&2; exit 2; }
  cd "$work_dir"
else
  cd "$here"
fi
