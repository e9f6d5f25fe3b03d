#!/usr/bin/env bash
# Set up everything xasr needs on a fresh Debian machine, idempotently.
#
# Usage:
#   bash tools/setup.sh            # Debian packages + .venv with pinned deps + xasr (editable)
#   XASR_SKIP_APT=1 bash tools/setup.sh   # skip the Debian packages (no root / already there)
#
# What it installs:
#   - Debian: the offline TTS engines and voices (espeak-ng, flite, festival + English voices),
#     sox, libsndfile, and the text packages the corpus synthesizer reads
#     (fortunes-zh, fortunes, fortunes-min, wordnet-base, sword-text-web + diatheke).
#   - Python: a virtualenv at .venv with torch 2.9.1 / torchaudio 2.9.1 and requirements.txt,
#     then xasr itself with `pip install -e .`.
# A second run with nothing changed only checks (a few seconds).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (setup.sh) $*"; }

APT_PACKAGES=(espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
  sox libsox-fmt-all libsndfile1 fortunes fortunes-min fortunes-zh wordnet-base
  sword-text-web diatheke python3-venv)
TORCH_VERSION=2.9.1
TORCHAUDIO_VERSION=2.9.1
PYTHON=${PYTHON:-python3}

if [ "${XASR_SKIP_APT:-0}" != 1 ]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "Debian packages present"
  fi
fi

# The stamp records what the venv was built from; a change of pins rebuilds what changed.
stamp_value=$( (echo "$TORCH_VERSION $TORCHAUDIO_VERSION"; cat requirements.txt setup.cfg) | sha256sum | cut -d' ' -f1)
stamp=.venv/.xasr-setup-stamp
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_value" ] && .venv/bin/python -c "import xasr, torch, lhotse" 2>/dev/null; then
  log "Python environment .venv up to date"
  exit 0
fi

[ -x .venv/bin/python ] || { log "creating .venv"; "$PYTHON" -m venv .venv; }
# pip's own exit status decides (pipefail); the filter only hides local-index noise.
pip_install() {
  .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
log "installing torch==$TORCH_VERSION and torchaudio==$TORCHAUDIO_VERSION (a few minutes on a fresh machine)"
pip_install "torch==$TORCH_VERSION"
pip_install "torch==$TORCH_VERSION" "torchaudio==$TORCHAUDIO_VERSION"
log "installing pinned requirements"
pip_install -r requirements.txt
log "installing xasr (editable)"
pip_install --no-deps -e .
.venv/bin/python -c "import xasr, torch, torchaudio, lhotse, sentencepiece, soundfile" \
  || { echo "setup.sh: the environment does not import; see the pip output above" >&2; exit 1; }
echo "$stamp_value" > "$stamp"
log "done: $(.venv/bin/python -c 'import torch, lhotse; print("torch", torch.__version__, "lhotse", lhotse.__version__)')"
