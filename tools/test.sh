#!/usr/bin/env bash
# Set everything up (tools/setup.sh), then run the test suite: the fast unit tests first, then
# the slow ones (corpus synthesis, data preparation, end-to-end recipe runs).
#
# Usage:
#   bash tools/test.sh                 # everything
#   bash tools/test.sh -k synth        # extra arguments go to both pytest runs
# Exits non-zero if set-up fails, any test fails, or a run collects no test.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash tools/setup.sh
export PYTHONUNBUFFERED=1
echo "== fast tests =="
.venv/bin/python -m pytest -q -m "not slow" "$@"
echo "== slow tests =="
.venv/bin/python -m pytest -q -m slow --durations=10 "$@"
