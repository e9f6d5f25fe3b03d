#!/usr/bin/env bash
# Kaldi-style option parsing for recipe scripts. Source it after declaring every option as a
# shell variable with its default, and a $help_message:
#
#   stage=0
#   corpus_dir=""
#   help_message="Usage: $0 [options] ..."
#   . tools/parse_options.sh
#
# "--corpus-dir DIR" and "--corpus-dir=DIR" set $corpus_dir; "--help" prints $help_message and
# the current values and exits 0. An option that names no declared variable, a missing value,
# a non-boolean value for an option whose default is true/false, or any positional argument
# is an error (exit 2): a typo must never be silently ignored.

_po_die() { echo "$0: $*" >&2; echo "Run '$0 --help' for the options." >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      echo "${help_message:-Usage: $0 [options]}"
      exit 0 ;;
    --*=*) _po_name=${1%%=*}; _po_value=${1#*=}; shift ;;
    --*)
      [ $# -ge 2 ] || _po_die "option $1 needs a value"
      _po_name=$1; _po_value=$2; shift 2 ;;
    *) _po_die "unexpected argument '$1' (options are --name value)" ;;
  esac
  _po_var=${_po_name#--}
  _po_var=${_po_var//-/_}
  case "$_po_var" in
    ''|[0-9]*|*[!a-zA-Z0-9_]*|help_message|_po_*) _po_die "invalid option $_po_name" ;;
  esac
  if ! declare -p "$_po_var" >/dev/null 2>&1; then
    _po_die "unknown option $_po_name"
  fi
  _po_old=${!_po_var}
  if [ "$_po_old" = true ] || [ "$_po_old" = false ]; then
    [ "$_po_value" = true ] || [ "$_po_value" = false ] \
      || _po_die "option $_po_name takes true or false, not '$_po_value'"
  fi
  printf -v "$_po_var" '%s' "$_po_value"
done
unset _po_name _po_value _po_var _po_old
