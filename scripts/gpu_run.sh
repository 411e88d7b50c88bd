#!/usr/bin/env bash
# Run on an offline GPU machine, from the repo root, with bundle/ (python -m attnpaper bundle) and
# .whl/ (scripts/fetch_wheels.sh) beside it. Stages: check | bench | sweep SEED... (any sequence).
#   bash scripts/gpu_run.sh check bench sweep 0
#   BENCH_MODELS=bundle/all-MiniLM-L6-v2-fp16 bash scripts/gpu_run.sh gputest bench-step
#   bash scripts/gpu_run.sh scaling-kernels scaling-model        # where attention starts to matter
#   TAG=local-512 DATA=bundle/imdb-512.npz SWEEP_SET="--set max_length=512" bash scripts/gpu_run.sh parallel "baseline:0 ..."
# STAGE_TIMEOUT=seconds stops each scaling stage in time; their JSON is rewritten after every measurement.
# Everything it makes goes under results/$TAG and is packed into $OUT/results-$TAG-<stage>.tgz.
set -uo pipefail
OUT=${OUT:-/tmp/attnpaper-out}; TAG=${TAG:-local}; mkdir -p "$OUT" "results/$TAG"
source scripts/gpu_env.sh
MODEL=bundle/all-MiniLM-L6-v2-fp16; DATA=${DATA:-bundle/imdb-128.npz}; LENGTHS=bundle/imdb-train-lengths.npy
VARIANTS=${VARIANTS:-baseline sdpa flash linear hybrid}
pack() {  # checkpoints of unfinished runs stay behind (hundreds of MB; a tarball comes back only under 16 MiB)
  tar czf "$OUT/results-$TAG-$1.tgz" --exclude="results/$TAG/checkpoints" --exclude="results/$TAG/.staging" "results/$TAG"; }
while [ $# -gt 0 ]; do
  stage=$1; shift
  case $stage in
    check)
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "results/$TAG/gpu.txt"
      python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())"
      python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tee "results/$TAG/pytest.txt" | tail -15 ;;
    bench)
      python3 -m attnpaper bench --model ${BENCH_MODEL:-distilbert-base-random} --variants ${BENCH_VARIANTS:-$VARIANTS} --lengths ${BENCH_LENGTHS:-128 256 512} \
        --steps ${BENCH_STEPS:-30} --repeats 2 --batch-size ${BENCH_BATCH:-32} --data $LENGTHS \
        --out "results/$TAG/bench-distilbert-base.json" 2>&1 | grep -v "Warning\|USDT" | tee "results/$TAG/bench.txt" | tail -25 ;;
    gputest)  # the GPU-only tests and the step's tests (captured graphs, padding-free flash, no syncs)
      python3 -m pytest -q -p no:cacheprovider tests/test_step.py tests/test_kernels.py tests/test_models.py 2>&1 \
        | grep -v "USDT" | tee "results/$TAG/pytest-step.txt" | tail -15 ;;
    bench-step)  # eager and captured side by side; appends to bench-step.json (BENCH_MODELS x BENCH_LENGTHS)
      python3 -m attnpaper bench --model ${BENCH_MODELS:-distilbert-base-random} --variants ${BENCH_VARIANTS:-$VARIANTS} \
        --lengths ${BENCH_LENGTHS:-128} --steps ${BENCH_STEPS:-40} --repeats ${BENCH_REPEATS:-1} --batch-size 32 \
        --data $LENGTHS --step-modes eager captured --append --out "results/$TAG/bench-step.json" 2>&1 \
        | grep -v "Warning\|USDT\|warn(" | tee -a "results/$TAG/bench-step.txt" | tail -${BENCH_TAIL:-30} ;;
    bench-minilm)  # the stand-in's own step: is the sweep's training bound by the GPU or by the host?
      python3 -m attnpaper bench --model $MODEL --variants ${BENCH_VARIANTS:-$VARIANTS} --lengths 128 \
        --steps ${BENCH_STEPS:-30} --repeats 2 --batch-size 32 --data $LENGTHS \
        --out "results/$TAG/bench-minilm.json" 2>&1 | grep -v "Warning\|USDT" | tee "results/$TAG/bench-minilm.txt" | tail -12 ;;
    sweep)
      seeds=(); while [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; do seeds+=("$1"); shift; done
      for v in $VARIANTS; do  # one variant at a time, packed after each: a cut-off run keeps what finished
        python3 -m attnpaper sweep --variants $v --seeds "${seeds[@]}" --out "results/$TAG" \
          --set model=$MODEL --set data=$DATA ${SWEEP_SET:-} 2>&1 | grep -v "IPKernelApp\|Warning" | tail -12
        pack sweep
      done
      python3 -m attnpaper table "results/$TAG" ;;
    parallel)  # parallel "v1:s1 v2:s2" "v3:s3 ...": one background stream per quoted group, all at once.
      # The GPU is shared, so these runs are flagged (notes.concurrent_runs) and give accuracy, not timings.
      streams=(); while [ $# -gt 0 ] && [[ $1 == *:* ]]; do streams+=("$1"); shift; done
      for s in "${streams[@]}"; do
        ( for vs in $s; do
            python3 -m attnpaper sweep --variants ${vs%%:*} --seeds ${vs##*:} --out "results/$TAG" \
              --set model=$MODEL --set data=$DATA ${SWEEP_SET:-} --set "notes={'concurrent_runs': ${#streams[@]}}" 2>&1 \
              | grep -v "IPKernelApp\|Warning" | grep '"status"\|FAILED'
          done ) &
      done
      wait; pack parallel
      python3 -m attnpaper table "results/$TAG" ;;
    scaling-kernels)  # each attention mechanism alone over N (python -m attnpaper scaling kernels --help)
      ${STAGE_TIMEOUT:+timeout $STAGE_TIMEOUT} python3 -m attnpaper scaling kernels ${SCALING_ARGS:-} \
        --out "results/$TAG/scaling-kernels.json" 2>&1 | grep -v "Warning\|USDT\|warn(" \
        | tee -a "results/$TAG/scaling-kernels.txt" | tail -${SCALING_TAIL:-20} ;;
    scaling-model)  # the captured step of each variant over N, DistilBERT-base's shape
      ${STAGE_TIMEOUT:+timeout $STAGE_TIMEOUT} python3 -m attnpaper scaling model --data $LENGTHS ${SCALING_ARGS:-} \
        --out "results/$TAG/scaling-model.json" 2>&1 | grep -v "Warning\|USDT\|warn(\|nline softmax\|split the reduction\|important use case\|^softmax.\|^$" \
        | tee -a "results/$TAG/scaling-model.txt" | tail -${SCALING_TAIL:-40} ;;
    *) echo "unknown stage $stage; valid: check gputest bench bench-step bench-minilm sweep SEED... parallel V:S..." \
         "scaling-kernels scaling-model"; exit 2 ;;
  esac
  pack "$stage"
done
