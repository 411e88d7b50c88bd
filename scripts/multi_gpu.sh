#!/usr/bin/env bash
# Several GPUs of one host: the same sweep on N GPUs and on one (same machine, same runs, each with a
# cold compiler cache), then data-parallel runs at the paper's setup and at 512 tokens.
# Run from the repo root with bundle/ (or bundle/xz) and .whl/ beside it:
#   STAGES="acc512 speedup ddp-paper" bash scripts/multi_gpu.sh   # results/$TAG, packed into $OUT/results-$TAG.tgz
#   REHEARSE=1 CUDA_VISIBLE_DEVICES=0,1 bash scripts/multi_gpu.sh   # on a CPU: the smoke preset, same steps
set -uo pipefail
OUT=${OUT:-/tmp/attnpaper-out}; TAG=${TAG:-local-multi}; mkdir -p "$OUT" "results/$TAG"
source scripts/gpu_env.sh
VARIANTS=${VARIANTS:-baseline sdpa linear hybrid}; SEEDS=${SEEDS:-0}
if [ -n "${REHEARSE:-}" ]; then
  SET=(--smoke); NGPU=$(echo "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | wc -l); LONG=(--set max_length=128)
  LONG512=(--set max_length=96)
else
  SET=(--set model=bundle/all-MiniLM-L6-v2-fp16 --set data=bundle/imdb-512.npz)  # 512-token ids cut to 128
  NGPU=$(nvidia-smi -L | wc -l); LONG=(--set max_length=512 --set train_samples=8192 --set epochs=1)
  LONG512=(--set max_length=512)
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "results/$TAG/gpu.txt"
fi
pack() { tar czf "$OUT/results-$TAG.tgz" --exclude='checkpoints' --exclude='.staging' --exclude='claims' "results/$TAG"; }
quiet() { grep -v "Warning\|IPKernelApp\|warn(\|USDT" | tail -${1:-6}; }

timed_sweep() {  # NAME GPUS: the sweep of VARIANTS x SEEDS on GPUS workers; its wall time in sweep-walls.txt
  local t0=$(date +%s.%N)
  TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-$1 timeout ${SWEEP_TIMEOUT:-260} python3 -m attnpaper sweep \
    --variants $VARIANTS --seeds $SEEDS "${SET[@]}" --out "results/$TAG/$1" --gpus $2 --quiet 2>&1 | quiet 4
  local rc=${PIPESTATUS[0]}
  echo "$1 gpus=$2 runs=$(ls results/$TAG/$1/records/*.json 2>/dev/null | wc -l) rc=$rc" \
       "wall_s=$(python3 -c "print(round($(date +%s.%N) - $t0, 1))")" | tee -a "results/$TAG/sweep-walls.txt"
  pack
}

ddp() {  # NAME EXTRA...: one data-parallel baseline run over every GPU
  local name=$1; shift
  timeout ${DDP_TIMEOUT:-120} python3 -m attnpaper sweep --variants baseline --seeds 0 "${SET[@]}" "$@" \
    --set nproc_per_node=$NGPU --out "results/$TAG/ddp-$name" --quiet 2>&1 | quiet 6
  pack
}

for stage in ${STAGES:-speedup ddp-paper ddp-long}; do
  case $stage in
    speedup)  # VARIANTS x SEEDS on every GPU, then on one
      timed_sweep sweep-${NGPU}gpu $NGPU; timed_sweep sweep-1gpu 1 ;;
    acc512)  # accuracy at 512 tokens, spread over every GPU (ACC_VARIANTS x ACC_SEEDS)
      BASE=("${SET[@]}"); SET+=("${LONG512[@]}")
      VARIANTS=${ACC_VARIANTS:-baseline linear hybrid} SEEDS=${ACC_SEEDS:-0 1 2} SWEEP_TIMEOUT=${ACC_TIMEOUT:-330} \
        timed_sweep ${ACC_NAME:-acc512-${NGPU}gpu} $NGPU
      SET=("${BASE[@]}") ;;
    kernels-flash)  # attnpaper flash against the raw varlen kernel it calls, side by side (N >= 512)
      timeout ${KERNEL_TIMEOUT:-90} python3 -m attnpaper scaling kernels --lengths 512 1024 2048 4096 8192 \
        --mechanisms varlen attnpaper-flash --passes fwd fwd_bwd --out "results/$TAG/scaling-kernels-flash.json" \
        2>&1 | quiet 14
      pack ;;
    ddp-paper) ddp paper ;;
    ddp-long) ddp long "${LONG[@]}" ;;
    *) echo "unknown stage $stage; valid: kernels-flash speedup acc512 ddp-paper ddp-long"; exit 2 ;;
  esac
done
for d in results/$TAG/*/; do
  echo "== $d"; python3 -m attnpaper table "$d" 2>&1
done | tee "results/$TAG/table.txt" | tail -30
pack
