#!/usr/bin/env bash
# Model stages 4-9 shared by recipes/aishell/run.sh and recipes/librispeech/run.sh.
# Sourced after tools/data_stages.sh; reads: corpus, llm_name, encoder_model, exp_stage1,
# exp_stage2, normalizer, decode_methods, dev_methods, llm_vocab, train_sets, eval_sets, encoder_cache, encoder_top,
# encoder_layers, nproc, torchrun_opts (training under torchrun: tools/recipe_lib.sh's xasr_train), and the hydra
# overrides in the arrays stage1_overrides / stage2_overrides.
#
#   4  models:   install the pretrained parts (LLM, Whisper encoder) under $XASR_ROOT/models
#   5  stage 1:  (with encoder_cache=true) store the frozen encoder's outputs for the training
#                and validation cuts -> data/encoder_cache[_lN or _lA-B][_topN]/; then the encoder side (CTC head +
#                C-Former) on the ASR objective -> exp/stage1/model
#   6  stage 2:  the S-Adapter first fitted to the LLM's embeddings of the units (xasr align-adapter
#                -> exp/stage2_init), then trained through the frozen LLM -> exp/stage2/model (which
#                keeps a copy of stage 3's n-gram LM, used by ctc_beam and llm_rescore)
#   7  decode:   the dev set and the seen-voice split with every method of dev_methods ->
#                exp/decode/{recogs,errs,wer}-{set}-{method}.txt; llm_rescore's CTC weight and
#                length bonus are chosen on the dev set first (exp/decode/tune-<dev>.{tsv,png},
#                rescore-weights.json, and the model directory's decoding.json that xasr transcribe
#                follows by default)
#   8  results:  the table of error rates and speeds of stage 7 -> exp/decode/results.md
#   9  benchmark: the test set(s) with every method of decode_methods (llm_rescore at the tuned
#                weights) against Whisper base (faster-whisper int8 with beam 5, and transformers
#                with benchmark_hf=true), in one run -> exp/benchmark/; then the run's results
#                (wall time per stage, peak memory, every set and method) -> exp/results.json

models_dir=${XASR_MODELS_DIR:-$XASR_ROOT/models}
export XASR_MODELS_DIR=$models_dir

if in_stages 4; then
  install_models 4 log/stage4-models.log $encoder_model $llm_name
fi

# the budget's training minutes and N-best (tools/recipe_options.sh) come before the recipe's own
# overrides (--stage1-opts, --stage2-opts), which win
[ -n "${stage1_minutes:-}" ] && stage1_overrides=(train.max_minutes="$stage1_minutes" "${stage1_overrides[@]}")
[ -n "${stage2_minutes:-}" ] && stage2_overrides=(train.max_minutes="$stage2_minutes" "${stage2_overrides[@]}")
[ -n "${nbest:-}" ] && stage2_overrides=(model.ctc_beam_size="$nbest" "${stage2_overrides[@]}")

# --encoder-top N: the top N Whisper layers train in stage 1 (from Whisper's weights, at a tenth of
# the heads' learning rate); both stages build the encoder split there, and stage 5 stores the
# output of the layers below
if [ "${encoder_top:-0}" != 0 ]; then
  case $encoder_top in *[!0-9]*) die "--encoder-top takes a number of layers, not '$encoder_top'" ;; esac
  stage1_overrides=(model.encoder.whisper.train_top="$encoder_top" "train.trainable=[encoder,context,ctc,cformer]"
                    optim.encoder_lr_scale=0.1 "${stage1_overrides[@]}")
  stage2_overrides=(model.encoder.whisper.train_top="$encoder_top" "${stage2_overrides[@]}")
fi

# --encoder-layers N: only Whisper's first N layers (and its final norm) run, in every stage and in the
# model directories' decodings; an intermediate layer holds more of the phones than the top one, which
# Whisper's decoder reads (RESULTS.md). A-B: the first B run and layers A to B (each through the final
# norm) are read side by side, stored that way, and mixed by the contextual head
if [ -n "${encoder_layers:-}" ]; then
  layer_overrides=(model.encoder.whisper.num_layers="${encoder_layers#*-}")
  case $encoder_layers in
    *-*) layer_overrides+=(model.encoder.whisper.output_layers=$(( ${encoder_layers#*-} - ${encoder_layers%-*} + 1 ))) ;;
  esac
  stage1_overrides=("${layer_overrides[@]}" "${stage1_overrides[@]}")
  stage2_overrides=("${layer_overrides[@]}" "${stage2_overrides[@]}")
fi

# the CTC head and the C-Former's unit head tie homophones (stage 3's unit_classes.json) in both stages
class_overrides=()
[ "${homophone_classes:-false}" = true ] && \
  class_overrides=(model.unit_classes="$lang_dir/unit_classes.json" model.cformer_classes=true)

cache_overrides=()
if [ "$encoder_cache" = true ]; then
  # with --encoder-layers N: the outputs of layer N (A-B: of layers A to B); with --encoder-top N: of
  # the layers below the top N
  cache_dir=data/encoder_cache${encoder_layers:+_l$encoder_layers}
  [ "${encoder_top:-0}" != 0 ] && cache_dir=${cache_dir}_top$encoder_top
  cache_overrides=(data.encoder_cache="$cache_dir")
fi

if in_stages 5; then
  if [ "$encoder_cache" = true ] && ! on_first_node; then
    log "Stage 5: the frozen encoder's outputs are stored by the first node ($cache_dir)"
  elif [ "$encoder_cache" = true ]; then
    log "Stage 5: store the frozen $encoder_model encoder's outputs (data/fbank -> $cache_dir)"
    xasr --log-file log/stage5-cache.log cache-encoder experiment="${corpus}_stage1" models_dir="$models_dir" \
      data.units="$lang_dir/unit.model" "${stage1_overrides[@]}" --out-dir "$cache_dir"
  fi
  train_once 5 "$exp_stage1" "stage-1 model" \
    "stage 1, encoder side on the ASR objective (data/fbank -> $exp_stage1/model)" "" \
    experiment="${corpus}_stage1" train.exp_dir="$exp_stage1" models_dir="$models_dir" \
    data.units="$lang_dir/unit.model" "${cache_overrides[@]}" "${class_overrides[@]}" "${stage1_overrides[@]}"
fi

if in_stages 6; then
  if [ ! -f "$exp_stage2/model/.done" ]; then
    fit_once 6 "${exp_stage2}_init" "S-Adapter" \
      "the S-Adapter to $llm_name's embeddings of the units ($exp_stage1/model -> ${exp_stage2}_init)" \
      xasr --log-file log/stage6-align.log align-adapter experiment="${corpus}_stage2" models_dir="$models_dir" \
      data.units="$lang_dir/unit.model" "${cache_overrides[@]}" "${class_overrides[@]}" "${stage2_overrides[@]}" \
      --init "$exp_stage1/model" --out "${exp_stage2}_init"
  fi
  lm_overrides=()
  [ -n "${lm_file:-}" ] && lm_overrides=(model.ngram.path="$lm_file")
  train_once 6 "$exp_stage2" "stage-2 model" \
    "stage 2, S-Adapter into the frozen $llm_name (${exp_stage2}_init -> $exp_stage2/model${lm_file:+, with the n-gram LM $lm_file})" "" \
    experiment="${corpus}_stage2" train.exp_dir="$exp_stage2" train.init_from="${exp_stage2}_init" \
    models_dir="$models_dir" data.units="$lang_dir/unit.model" "${cache_overrides[@]}" "${lm_overrides[@]}" \
    "${class_overrides[@]}" "${stage2_overrides[@]}"
fi

# the evaluation sets by role: test sets go to stage 9's benchmark, the others (dev, and the
# seen-voice split) to stage 7's decoding; llm_rescore's weights are tuned on the first dev set
dev_sets=""; test_sets=""
for s in $eval_sets; do
  case $s in
    *seen*) dev_sets="$dev_sets $s" ;;
    *test*) test_sets="$test_sets $s" ;;
    *) dev_sets="$dev_sets $s" ;;
  esac
done
main_method=llm_rescore
case " $decode_methods " in *" llm_rescore "*) ;; *) main_method=${decode_methods##* } ;; esac

if in_stages 7; then
  sets=()
  for s in $dev_sets; do sets+=("$s=data/fbank/${corpus}_cuts_${s}.jsonl.gz"); done
  [ ${#sets[@]} -gt 0 ] || die "no dev set in data/manifests (sets: $eval_sets)"
  methods7=${dev_methods:-$decode_methods}
  tune=()
  case " $methods7 " in *" llm_rescore "*)
    for s in $dev_sets; do case $s in *dev*) tune=(--tune-rescore-on "$s" --save-decoding); break ;; esac; done ;;
  esac
  log "Stage 7: decode${dev_sets} with ${methods7} ($exp_stage2/model -> exp/decode)"
  # shellcheck disable=SC2086
  xasr --log-file log/stage7-decode.log decode --model-dir "$exp_stage2/model" --cuts "${sets[@]}" \
    --methods $methods7 --out-dir exp/decode --normalizer "$normalizer" --models-dir "$models_dir" \
    --llm-vocab "$llm_vocab" "${tune[@]}"
fi

if in_stages 8; then
  log "Stage 8: results of the dev sets (exp/decode/summary.json -> exp/decode/results.md)"
  python -m xasr.bin.results_table exp/decode/summary.json exp/decode/results.md
  cat exp/decode/results.md
  log "Details: exp/decode/errs-<set>-<method>.txt (alignments, confusions), exp/stage*/loss.png, log/"
fi

if in_stages 9; then
  bench_sets=()
  for s in $test_sets; do bench_sets+=("$s=data/fbank/${corpus}_cuts_${s}.jsonl.gz"); done
  [ ${#bench_sets[@]} -gt 0 ] || die "no test set in data/manifests (sets: $eval_sets)"
  # every decoding of the recipe (llm_rescore at the weights stage 7 chose on the dev set: the model
  # directory's decoding.json) and Whisper base through faster-whisper with its own default
  # decoding (int8, beam 5), in one run
  systems=()
  for m in $decode_methods; do systems+=("$m=xasr:$exp_stage2/model:$m:llm_vocab=$llm_vocab"); done
  systems+=("faster-whisper-base-int8-beam5=faster-whisper:$encoder_model:int8:beam=5")
  [ "${benchmark_hf:-false}" = true ] && systems+=("hf-whisper=hf-whisper:$encoder_model")
  log "Stage 9: benchmark${test_sets} against Whisper base ($exp_stage2/model -> exp/benchmark, exp/results.json)"
  xasr --log-file log/stage9-benchmark.log benchmark --system "${systems[@]}" --sets "${bench_sets[@]}" \
    --normalizer "$normalizer" --reference "$main_method" --threads "$nj" --models-dir "$models_dir" \
    --out-dir exp/benchmark
  cat exp/benchmark/benchmark.md
  train_cuts=()
  for s in $train_sets; do train_cuts+=("data/fbank/${corpus}_cuts_${s}.jsonl.gz"); done
  # what the run was (for comparing runs: benchmarks/scaling.py)
  python -m xasr.bin.recipe_results --budget "${budget:-quick}" --main-method "$main_method" \
    --decode-summary exp/decode/summary.json --benchmark exp/benchmark/benchmark.json \
    --stage-log log/stages.tsv --usage-log log/usage.jsonl --out exp/results.json \
    --settings "train_hours=$train_hours" "speed_perturb=$speed_perturb" "seed=$seed" "nproc=$nproc" \
      "encoder_cache=$encoder_cache" "encoder_top=$encoder_top" "encoder_layers=$encoder_layers" "lm_order=$lm_order" "nbest=$nbest" "llm_vocab=$llm_vocab" "synth_opts=$synth_opts" \
      "stage1_opts=$stage1_opts" "stage2_opts=$stage2_opts" \
    --train-cuts "${train_cuts[@]}" --exp-dirs "$exp_stage1" "$exp_stage2"
fi
