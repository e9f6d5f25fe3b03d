#!/usr/bin/env bash
# Data stages 0-3 shared by recipes/aishell/run.sh and recipes/librispeech/run.sh.
# Sourced by a recipe after its options are parsed; reads these variables:
#   corpus (aishell|librispeech), corpus_dir, download, train_hours, eval_hours, seen_hours, synth_opts, seed, nj, speed_perturb,
#   fbank, min_duration, max_duration, unit_type (char|bpe), vocab_size, lang_dir, homophone_classes (true|false)
# and sets: train_sets, eval_sets (split names found in data/manifests).
#
#   0  corpus:    synthesize the built-in corpus, or use / download --corpus-dir
#   1  manifests: lhotse's recipe -> data/manifests/${corpus}_cuts_{split}.jsonl.gz
#   2  cuts:      filtered (and speed-perturbed) cuts -> data/fbank/${corpus}_cuts_{split}.jsonl.gz, with
#                 80-dim fbank (lilcom) when fbank=true (the Whisper encoder reads the audio)
#   3  units:     sentencepiece on the training text -> $lang_dir/unit.model (with homophone_classes=true
#                 also $lang_dir/unit_classes.json, the CTC head's homophone classes); and, with lm_order > 0,
#                 the n-gram LM of the CTC prefix search (lm_tokens, lm_order; its text: lm_text, else
#                 the synthesized corpus' lm-text.txt, else the training transcripts; never a
#                 transcript of an evaluation set) -> $lm_file

if [ -z "$corpus_dir" ]; then
  [ "$download" = true ] && die "--download true needs --corpus-dir (where to put the corpus)"
  corpus_dir=download/${corpus}_synth
  synthesized=true
else
  synthesized=false
fi
mkdir -p data log

# Split names present in data/manifests (training parts first).
find_splits() {
  train_sets=""; eval_sets=""
  local f s
  for f in data/manifests/${corpus}_cuts_*.jsonl.gz; do
    [ -e "$f" ] || continue
    s=${f#data/manifests/${corpus}_cuts_}; s=${s%.jsonl.gz}
    case "$s" in
      *.partial) ;;
      train*) train_sets="$train_sets $s" ;;
      *) eval_sets="$eval_sets $s" ;;
    esac
  done
  train_sets=${train_sets# }; eval_sets=${eval_sets# }
}

# dev and test of a synthesized corpus: --eval-hours each (fixed, whatever --train-hours), and
# --seen-hours of training voices reading unseen text (test_seen / test-seen; 0: none)
[ -n "${eval_hours:-}" ] || eval_hours=0.3
[ -n "${seen_hours:-}" ] || seen_hours=0.1

if in_stages 0; then
  settings="corpus_dir=$corpus_dir synthesized=$synthesized train_hours=$train_hours eval_hours=$eval_hours seen_hours=$seen_hours seed=$seed synth_opts=${synth_opts:-} download=$download"
  if is_done data/.stage0.done "$settings"; then
    log "Stage 0: corpus already there ($corpus_dir), skipped"
  else
    if [ "$synthesized" = true ]; then
      log "Stage 0: synthesize the built-in $corpus corpus (offline TTS + Debian text -> $corpus_dir)"
      rm -rf "$corpus_dir"
      read -r -a synth_extra <<< "${synth_opts:-}"
      xasr --log-file log/stage0-synth.log synth-corpus --corpus "$corpus" --out-dir "$corpus_dir" \
        --train-hours "$train_hours" --dev-hours "$eval_hours" --test-hours "$eval_hours" --seen-hours "$seen_hours" \
        --seed "$seed" --jobs "$nj" "${synth_extra[@]}"
    elif [ "$download" = true ]; then
      log "Stage 0: download $corpus with lhotse (-> $corpus_dir)"
      xasr --log-file log/stage0-download.log prepare --corpus "$corpus" --corpus-dir "$corpus_dir" --download-only
    else
      log "Stage 0: use the corpus at $corpus_dir"
      [ -d "$corpus_dir" ] || die "--corpus-dir $corpus_dir does not exist"
    fi
    mark_done data/.stage0.done "$settings"
  fi
fi

if in_stages 1; then
  if is_done data/manifests/.done "corpus_dir=$corpus_dir"; then
    log "Stage 1: manifests already there, skipped"
  else
    log "Stage 1: lhotse manifests ($corpus_dir -> data/manifests/${corpus}_cuts_{split}.jsonl.gz)"
    xasr --log-file log/stage1-prepare.log prepare --corpus "$corpus" --corpus-dir "$corpus_dir" \
      --output-dir data/manifests --jobs "$nj"
    mark_done data/manifests/.done "corpus_dir=$corpus_dir"
  fi
fi

find_splits

if in_stages 2; then
  settings="speed_perturb=$speed_perturb min_duration=$min_duration max_duration=$max_duration fbank=$fbank"
  if is_done data/fbank/.done "$settings"; then
    log "Stage 2: cuts already there (data/fbank), skipped"
  else
    [ -n "$train_sets$eval_sets" ] || die "no manifests in data/manifests: run stage 1 first"
    what="filtered cuts without features (the encoder reads the audio)"
    [ "$fbank" = true ] && what="fbank features"
    log "Stage 2: $what (data/manifests -> data/fbank; sets: $train_sets $eval_sets;" \
        "speed perturbation: $speed_perturb)"
    sp_opt=()
    [ "$speed_perturb" = true ] && sp_opt=(--speed-perturb)
    [ "$fbank" = true ] || sp_opt+=(--no-features)
    # shellcheck disable=SC2086
    xasr --log-file log/stage2-fbank.log compute-fbank --corpus "$corpus" --manifest-dir data/manifests \
      --output-dir data/fbank --splits $train_sets $eval_sets --jobs "$nj" "${sp_opt[@]}" \
      --min-duration "$min_duration" --max-duration "$max_duration"
    mark_done data/fbank/.done "$settings"
  fi
fi

if in_stages 3; then
  settings="type=$unit_type vocab_size=$vocab_size homophone_classes=${homophone_classes:-false}"
  class_opt=()
  [ "${homophone_classes:-false}" = true ] && class_opt=(--homophone-classes)
  if is_done "$lang_dir/.done" "$settings"; then
    log "Stage 3: units already there ($lang_dir), skipped"
  else
    [ -n "$train_sets" ] || die "no training manifest in data/manifests: run stage 1 first"
    cuts=()
    for s in $train_sets; do cuts+=("data/manifests/${corpus}_cuts_${s}.jsonl.gz"); done
    log "Stage 3: $unit_type units (${cuts[*]} -> $lang_dir/unit.model)"
    xasr --log-file log/stage3-units.log train-units --cuts "${cuts[@]}" --lang-dir "$lang_dir" \
      --type "$unit_type" --vocab-size "$vocab_size" "${class_opt[@]}"
    mark_done "$lang_dir/.done" "$settings"
  fi
fi

lm_file=""
if [ "${lm_order:-0}" -gt 0 ]; then
  lm_file=data/lm/${lm_tokens}${lm_order}.arpa
fi
if in_stages 3 && [ -n "$lm_file" ]; then
  lm_src=()
  if [ -n "${lm_text:-}" ]; then
    read -r -a lm_src <<< "--text $lm_text"
  elif [ -f "$corpus_dir/lm-text.txt" ]; then
    lm_src=(--text "$corpus_dir/lm-text.txt")
  else
    lm_src=(--cuts)
    for s in $train_sets; do lm_src+=("data/manifests/${corpus}_cuts_${s}.jsonl.gz"); done
  fi
  settings="${lm_src[*]} tokens=$lm_tokens order=$lm_order"
  if is_done data/lm/.done "$settings"; then
    log "Stage 3: n-gram LM already there ($lm_file), skipped"
  else
    excl=()
    for s in $eval_sets; do excl+=("data/manifests/${corpus}_cuts_${s}.jsonl.gz"); done
    log "Stage 3: $lm_tokens $lm_order-gram LM (${lm_src[*]} -> $lm_file; evaluation transcripts left out)"
    xasr --log-file log/stage3-lm.log train-lm "${lm_src[@]}" --exclude-cuts "${excl[@]}" \
      --tokens "$lm_tokens" --order "$lm_order" --out "$lm_file"
    mark_done data/lm/.done "$settings"
  fi
fi

# data_summary: one line per set with cuts and hours (features if computed, else manifests).
data_summary() {
  # shellcheck disable=SC2086
  python -m xasr.bin.data_summary --corpus "$corpus" $train_sets $eval_sets
}
