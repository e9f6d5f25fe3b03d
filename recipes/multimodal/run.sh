#!/usr/bin/env bash
# Multimodal recipe for xasr: speech about pictures (X-LLM stage 3 with image context).
#
# Usage:
#   bash recipes/multimodal/run.sh                     # every stage, from nothing (about 30 min on 2 cores)
#   bash recipes/multimodal/run.sh --stop-stage 1      # corpus and units only
#   bash recipes/multimodal/run.sh --stage 5           # decode and score again
#   bash recipes/multimodal/run.sh --train-hours 0.02 --dev-scenes 8 --test-scenes 8 \
#       --stage1-opts "train.max_steps=5" --stage2-opts "train.max_steps=3" --stage3-opts "train.max_steps=3"
#
# Stages (a finished stage leaves a .done marker and is skipped on a rerun):
#   0  corpus:  xasr synth-scenes -> download/scenes (pictures, speech, noisy and masked copies) and
#               data/manifests/scenes_cuts_{train,train_noisy,dev,test,{dev,test}_noisy_<snr>,{dev,test}_masked}.jsonl.gz
#   1  units:   sentencepiece BPE on the training text -> data/lang_bpe_<vocab-size>/unit.model
#   2  models:  install whisper-base, smollm2-135m-instruct, efficientnet-lite0 (-> $XASR_MODELS_DIR)
#   3  speech:  store the frozen Whisper encoder's outputs for train, train_noisy and dev
#               (-> data/encoder_cache); stage 1, C-Former + CTC (-> exp/stage1/model); the S-Adapter
#               fitted to the LLM's word embeddings (xasr align-adapter -> exp/stage2_init);
#               stage 2, S-Adapter into the frozen SmolLM2 (-> exp/stage2/model); clean + noisy
#               speech, no pictures
#   4  images:  the Q-Former + I-Adapter first fitted to the LLM's embeddings of each picture's words
#               (local/align_image.py -> exp/stage3_init); then stage 3: EfficientNet-Lite0 -> Q-Former
#               -> I-Adapter as fitted (empty cells left out of the prompt), the S-Adapter trained to use
#               them, everything else frozen; clean + noisy training speech with its pictures
#               (-> exp/stage3/model)
#   5  decode:  the --decode-sets with llm_greedy in three conditions: speech only (the stage-2
#               model), and with the stage-3 model the cut's own picture or another scene's picture
#               (shuffled with --shuffle-seed) -> exp/decode/{speech,image,shuffled}/
#   6  results: WER with 95% bootstrap intervals, paired bootstrap p-values against speech only,
#               and the error rate on the words the picture decides -> exp/results.{md,json,png}
# Work happens in this recipe's directory (download/, data/, exp/, log/), whatever the caller's cwd.
set -euo pipefail

stage=0
stop_stage=100
train_hours=0.75       # clean training speech (train_noisy adds one noisy copy of each utterance)
dev_scenes=100         # dev utterances (one per scene), the validation set of every training stage
test_scenes=100        # test utterances (one per scene), in every test condition
snrs="5,0"             # SNRs (dB) of the noisy dev/test copies
seed=0                 # seed of the corpus
nj=2                   # parallel jobs of the corpus synthesis
nproc=1                # training processes on this node (torchrun, DDP); CPU threads split --nj between them
torchrun_opts=""       # torchrun's node options for multi-node training, e.g. "--nnodes 2 --node-rank 0
                       # --master-addr host0 --master-port 29500" (every node runs the same command)
vocab_size=256         # BPE units
stage1_opts=""         # extra hydra overrides for stage-1 training, e.g. "train.max_steps=100"
stage2_opts=""         # extra hydra overrides for stage-2 training
stage3_opts=""         # extra hydra overrides for stage-3 training
image_fit_scenes=600   # new scenes drawn (besides the training ones) to fit the image path before stage 3
image_fit_epochs=40    # epochs of that fit
decode_sets="test test_noisy_5 test_masked"  # test_noisy_0 exists too
decode_max_utts=0      # decode only the first N utterances of each set (0: all)
shuffle_seed=0         # the mismatched-image control's permutation
threads=2              # torch threads of decoding
resamples=1000         # bootstrap resamples of the result table

help_message="Usage: $0 [options]
Speech about pictures: scenes corpus, speech stages 1-2, image stage 3, decoding with and without pictures.
Options (default in brackets):
  --stage N             first stage to run [$stage]
  --stop-stage N        last stage to run [$stop_stage]
  --train-hours H       hours of clean training speech [$train_hours]
  --dev-scenes N        dev utterances [$dev_scenes]
  --test-scenes N       test utterances [$test_scenes]
  --snrs LIST           SNRs (dB) of the noisy dev/test copies, comma-separated [$snrs]
  --seed N              seed of the corpus [$seed]
  --nj N                parallel jobs of the corpus synthesis [$nj]
  --nproc N            training processes on this node, through torchrun [$nproc]
  --torchrun-opts STR  torchrun node options (multi-node training) ["$torchrun_opts"]
  --vocab-size N        BPE units [$vocab_size]
  --stage1-opts STR     hydra overrides for stage-1 training [\"$stage1_opts\"]
  --stage2-opts STR     hydra overrides for stage-2 training [\"$stage2_opts\"]
  --stage3-opts STR     hydra overrides for stage-3 training [\"$stage3_opts\"]
  --image-fit-scenes N  new scenes drawn to fit the image path before stage 3 [$image_fit_scenes]
  --image-fit-epochs N  epochs of that fit [$image_fit_epochs]
  --decode-sets STR     test sets to decode [\"$decode_sets\"]
  --decode-max-utts N   decode the first N utterances of each set, 0 for all [$decode_max_utts]
  --shuffle-seed N      seed of the mismatched-image permutation [$shuffle_seed]
  --threads N           torch threads of decoding [$threads]
  --resamples N         bootstrap resamples [$resamples]"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../../tools/parse_options.sh"
cd "$here"
. ../../tools/recipe_lib.sh
require_xasr
run_started

corpus=scenes
corpus_dir=download/scenes
lang_dir=data/lang_bpe_${vocab_size}
cache_dir=data/encoder_cache
models_dir=${XASR_MODELS_DIR:-$XASR_ROOT/models}
export XASR_MODELS_DIR=$models_dir
read -r -a stage1_overrides <<< "$stage1_opts"
read -r -a stage2_overrides <<< "$stage2_opts"
read -r -a stage3_overrides <<< "$stage3_opts"
common=(models_dir="$models_dir" data.units="$lang_dir/unit.model")
mkdir -p data log exp

if in_stages 0; then
  settings="train_hours=$train_hours dev_scenes=$dev_scenes test_scenes=$test_scenes snrs=$snrs seed=$seed"
  if is_done data/.stage0.done "$settings"; then
    log "Stage 0: corpus already there ($corpus_dir), skipped"
  else
    log "Stage 0: synthesize the scenes corpus ($train_hours h of training speech -> $corpus_dir, data/manifests)"
    rm -rf "$corpus_dir" "$corpus_dir.partial" data/manifests
    xasr --log-file log/stage0-synth.log synth-scenes --out-dir "$corpus_dir" --train-hours "$train_hours" \
      --dev-scenes "$dev_scenes" --test-scenes "$test_scenes" --snrs="$snrs" --seed "$seed" --jobs "$nj" \
      --manifest-dir data/manifests > log/stage0-summary.json
    mark_done data/.stage0.done "$settings"
  fi
fi

if in_stages 1; then
  settings="type=bpe vocab_size=$vocab_size"
  if is_done "$lang_dir/.done" "$settings"; then
    log "Stage 1: units already there ($lang_dir), skipped"
  else
    log "Stage 1: BPE units (data/manifests/scenes_cuts_train.jsonl.gz -> $lang_dir/unit.model)"
    xasr --log-file log/stage1-units.log train-units --cuts data/manifests/scenes_cuts_train.jsonl.gz \
      --lang-dir "$lang_dir" --type bpe --vocab-size "$vocab_size"
    mark_done "$lang_dir/.done" "$settings"
  fi
fi

if in_stages 2; then
  install_models 2 log/stage2-models.log whisper-base smollm2-135m-instruct efficientnet-lite0
fi

if in_stages 3; then
  if on_first_node; then  # other nodes of a multi-node run (--torchrun-opts) wait for it
    log "Stage 3: store the frozen whisper-base encoder's outputs (data/manifests -> $cache_dir)"
    xasr --log-file log/stage3-cache.log cache-encoder experiment=scenes_stage1 "${common[@]}" \
      --out-dir "$cache_dir"
  fi
  train_once 3 exp/stage1 "stage-1 model" \
    "stage 1, C-Former + CTC on clean + noisy speech ($cache_dir -> exp/stage1/model)" log/stage3-train1.log \
    experiment=scenes_stage1 "${common[@]}" data.encoder_cache="$cache_dir" "${stage1_overrides[@]}"
  fit_once 3 exp/stage2_init "S-Adapter" \
    "the S-Adapter to the LLM's word embeddings (exp/stage1/model -> exp/stage2_init)" \
    xasr --log-file log/stage3-align.log align-adapter experiment=scenes_stage2 "${common[@]}" \
    data.encoder_cache="$cache_dir" "${stage2_overrides[@]}" --init exp/stage1/model --out exp/stage2_init
  train_once 3 exp/stage2 "stage-2 model" \
    "stage 2, S-Adapter into the frozen SmolLM2 (exp/stage1/model -> exp/stage2/model)" log/stage3-train2.log \
    experiment=scenes_stage2 "${common[@]}" data.encoder_cache="$cache_dir" "${stage2_overrides[@]}"
fi

fit_image_path() {  # the image path fitted before stage 3 (local/align_image.py)
  python local/align_image.py --init exp/stage2/model --out exp/stage3_init \
    --extra-scenes "$image_fit_scenes" --epochs "$image_fit_epochs" experiment=scenes_stage3 "${common[@]}" \
    "${stage3_overrides[@]}" > log/stage4-align.log 2>&1 || die "fitting the image path failed, see log/stage4-align.log"
}

if in_stages 4; then
  if [ ! -f exp/stage3/model/.done ]; then
    fit_once 4 exp/stage3_init "image path" \
      "the Q-Former + I-Adapter to the LLM's embeddings of each picture's words (exp/stage2/model + $image_fit_scenes new scenes -> exp/stage3_init)" \
      fit_image_path
  fi
  train_once 4 exp/stage3 "stage-3 model" \
    "stage 3, the S-Adapter next to the pictures' vectors in the frozen SmolLM2 (exp/stage3_init/model + pictures -> exp/stage3/model)" \
    log/stage4-train3.log experiment=scenes_stage3 "${common[@]}" data.encoder_cache="$cache_dir" \
    train.init_from=exp/stage3_init/model "${stage3_overrides[@]}"
fi

# NAME=PATH of every decoded set (the first --decode-max-utts utterances when set; every test
# condition lists the same utterances in the same order, so the subsets match)
decode_cuts=()
for s in $decode_sets; do
  src=data/manifests/${corpus}_cuts_${s}.jsonl.gz
  if [ "$decode_max_utts" -gt 0 ]; then
    dst=data/decode_subsets/${corpus}_cuts_${s}.jsonl.gz
    decode_cuts+=("$s=$dst")
  else
    decode_cuts+=("$s=$src")
  fi
done

if in_stages 5; then
  if [ "$decode_max_utts" -gt 0 ]; then
    mkdir -p data/decode_subsets
    for s in $decode_sets; do
      python -c "import sys; from lhotse import CutSet; CutSet.from_file(sys.argv[1]).subset(first=int(sys.argv[3])).to_file(sys.argv[2])" \
        "data/manifests/${corpus}_cuts_${s}.jsonl.gz" "data/decode_subsets/${corpus}_cuts_${s}.jsonl.gz" "$decode_max_utts"
    done
  fi
  for condition in speech image shuffled; do
    model=exp/stage3/model
    case $condition in
      speech) opts=(); model=exp/stage2/model ;;  # the speech-only system stage 3 starts from
      image) opts=() ;;
      shuffled) opts=(--image-shuffle-seed "$shuffle_seed") ;;
    esac
    log "Stage 5: decode $decode_sets with llm_greedy, $condition ($model -> exp/decode/$condition)"
    xasr --log-file "log/stage5-decode-$condition.log" decode --model-dir "$model" \
      --cuts "${decode_cuts[@]}" --methods llm_greedy --out-dir "exp/decode/$condition" \
      --normalizer english_word --models-dir "$models_dir" --threads "$threads" "${opts[@]}" \
      > "log/stage5-decode-$condition.out"
  done
fi

if in_stages 6; then
  log "Stage 6: results (exp/decode -> exp/results.md, exp/results.json, exp/results.png)"
  xasr --log-file log/stage6-results.log mm-results --decode-dir exp/decode --method llm_greedy \
    --conditions speech image shuffled --cuts "${decode_cuts[@]}" --resamples "$resamples" \
    --out exp/results.md --plot exp/results.png
  cat exp/results.md
  log "Details: exp/decode/<condition>/errs-<set>-llm_greedy.txt, exp/stage*/loss.png, log/ (log/stages.tsv: when each stage began)"
fi

log "Done (stages $stage..$stop_stage). Corpus: $corpus_dir, data: data/, models: exp/, logs: log/"
