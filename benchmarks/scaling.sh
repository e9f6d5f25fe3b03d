#!/usr/bin/env bash
# The scaling curve of a recipe: the recipe from nothing at several training hours, each run in
# its own work directory (resumable: a run whose results.json exists is not run again), then the
# table and plot of error against hours of training audio and against wall time
# (benchmarks/scaling.py). Each run synthesizes its own training corpus; the dev and test sets do
# not depend on the hours, so the points are comparable.
#
# Usage:
#   bash benchmarks/scaling.sh --corpus librispeech --hours "1 2 4 8" --root exp/scaling/librispeech
#   bash benchmarks/scaling.sh --corpus aishell --hours "2 4" --recipe-opts "--stage1-opts 'train.log_interval=50'" \
#       --extra "exp/other-run/exp/results.json"
set -euo pipefail

corpus=librispeech
hours="1 2 4 8"
root=""            # default: exp/scaling/<corpus> under the repository
recipe_opts=""     # more options of every run (the same for all points)
extra=""           # more results files on the curve (e.g. a full-budget run), PATH or PATH@HOURS
title=""
help_message="Usage: $0 [options]
  --corpus NAME        aishell or librispeech [$corpus]
  --hours STR          training hours of the runs [\"$hours\"]
  --root DIR           work directories <root>/h<hours>, logs, scaling.md and scaling.png [exp/scaling/<corpus>]
  --recipe-opts STR    more recipe options for every run [\"$recipe_opts\"]
  --extra STR          more results files on the curve [\"$extra\"]
  --title STR          the plot's title [the corpus]"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$repo/tools/parse_options.sh"
case "$corpus" in aishell|librispeech) ;; *) echo "$0: --corpus takes aishell or librispeech" >&2; exit 2 ;; esac
[ -n "$hours" ] || { echo "$0: --hours is empty" >&2; exit 2; }
root=$(realpath -m "${root:-$repo/exp/scaling/$corpus}")
mkdir -p "$root"
[ -x "$repo/.venv/bin/python" ] && export PATH="$repo/.venv/bin:$PATH"

# the recipe options as the shell would split them (quotes group a value with spaces)
eval "opts=($recipe_opts)" || { echo "$0: cannot parse --recipe-opts" >&2; exit 2; }
runs=()
for h in $hours; do
  work=$root/h$h
  if [ -f "$work/exp/results.json" ]; then
    echo "$(date '+%F %T') $corpus $h h: done before ($work/exp/results.json)"
  else
    echo "$(date '+%F %T') $corpus $h h: bash recipes/$corpus/run.sh --work-dir $work --train-hours $h $recipe_opts (log: $root/h$h.log)"
    bash "$repo/recipes/$corpus/run.sh" --work-dir "$work" --train-hours "$h" ${opts[@]+"${opts[@]}"} > "$root/h$h.log" 2>&1 \
      || { echo "$0: the $h-h run failed; see $root/h$h.log (rerun this command to go on)" >&2; exit 1; }
  fi
  runs+=("$work/exp/results.json")
done
# shellcheck disable=SC2206
[ -n "$extra" ] && runs+=($extra)
python "$repo/benchmarks/scaling.py" "${runs[@]}" --out-dir "$root" --title "${title:-$corpus (synthesized corpus)}"
