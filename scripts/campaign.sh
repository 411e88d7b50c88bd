#!/usr/bin/env bash
# Every GPU result of the book from one frozen commit (issue 20), a GPU call at a time. Run it from the
# repo root of a checkout of that commit, with bundle/ (python -m attnpaper bundle, its GIT_SHA the
# frozen commit; bundle/xz for 512 tokens) and .whl/ beside it:
#   DEADLINE=570 CALL=c1 bash scripts/campaign.sh tests runs:128:baseline,sdpa,flash,linear,hybrid:0
# Jobs, run in the order given:
#   tests                               the CUDA tests (the whole step against the uncaptured one, no syncs);
#                                       if they fail, the call stops there
#   runs:LEN:VARIANTS:SEEDS[:ARM]       the paper's setup at LEN tokens (128 or 512), the stand-in model;
#                                       ARM fp16 (autocast fp16 + gradient scaler) or dropout (attention
#                                       dropout 0.1), the accuracy artefacts; or issue 39's arms: nomask
#                                       (flash, batches padded to LEN, padding attended: no padding mask),
#                                       elu (linear, elu+1 feature map), favor4x (linear, 4 x FAVOR+'s
#                                       default d log d features); one run at a time, solo, in one
#                                       kernel for the job's runs (sweep --reuse-kernel: on an H100 a later
#                                       run starts in 0.3 s, not 9-12 s, and its peak memory is a fresh
#                                       kernel's to 0.01 MB, 7 runs of 7: results/issue38); REUSE=0: a
#                                       kernel per run
#   bench:MODEL:LENGTHS:REPEATS[:t4]    whole, captured and eager steps side by side, with transformers'
#                                       own model (--reference); MODEL minilm or distilbert; LENGTHS 128+256;
#                                       t4 (issue 39): eager steps in the setup a T4 user had (bench --setup t4:
#                                       a T4's kernels, fp16 and a gradient scaler, dynamic padding), into bench-t4/
#   scaling-kernels  scaling-model      where attention starts to matter (chapter 9)
#   memory                              the paper's memory column put to the test (paper-memory): the
#                                       arms and the step of the peak per case of what each run keeps
#   profile                             calls, FLOPs and bytes of every aten op of one eager step per variant
#                                       (profile-ops: DistilBERT-base's shape, random init, 128 tokens, batch
#                                       32, bf16), the input of the T4 prediction (issue 39; analysis/roofline.py)
#   trainer:SEEDS                       the Trainer reference row at 128 tokens (trainer-ref: transformers'
#                                       Trainer, no attnpaper model code); one seed at a time
# Where results go (RESULTS, default results/h200: a new campaign writes beside the published set until complete):
# $RESULTS/records (128 tokens), len512/, artefacts/{fp16,dropout,nomask,elu,favor4x}/, bench/, bench-t4/, trainer/,
# scaling-*.json, artefacts/paper-memory.json, artefacts/op-profile.json. After every job everything under
# $RESULTS that this call wrote is packed into $OUT/h200-$CALL.tgz (one file back, whatever stops the call), with the log.
# DEADLINE (seconds from the start, default 570): a job that could not finish before it is not started,
# and a started one is stopped at it (sweeps, bench and scaling keep what they finished).
# REHEARSE=1 (a CPU, the venv's python first on PATH): the same jobs on a tiny random model, synthetic
# data and eager steps, in seconds, written under results/rehearsal.
set -uo pipefail
START=$(date +%s); DEADLINE=${DEADLINE:-570}; CALL=${CALL:-c0}; OUT=${OUT:-/tmp/attnpaper-out}
R=${RESULTS:-results/h200}; [ "${REHEARSE:-0}" = 1 ] && R=results/rehearsal  # a rehearsal never writes beside real results
mkdir -p "$OUT" $R
source scripts/gpu_env.sh
MODEL=bundle/all-MiniLM-L6-v2-fp16; LENGTHS=bundle/imdb-train-lengths.npy; TINY=()
DATA=bundle/imdb-512.npz  # every run's token ids, cut to 128 where it runs at 128 (what the 64 MiB can carry)
[ "${REHEARSE:-0}" = 1 ] && TINY=(--model bert-tiny-random --steps 2)
LOG="$OUT/log-$CALL.txt"
NOISE="Warning\|warn(\|Online softmax\|split the reduction\|important use\|softmax\.$\|^$\|USDT\|Loading weights"
NOISE="$NOISE\|LOAD REPORT\|^Key \|^---\|MISSING\|^Notes\|newly initialized\|IPKernelApp"
touch "$OUT/.start"

left() { echo $((DEADLINE - ($(date +%s) - START))); }
say() { echo "[$(($(date +%s) - START)) s] $*" | tee -a "$LOG"; }
pack() {  # what this call wrote under $R (checkpoints of unfinished runs stay behind)
  find $R -type f -newer "$OUT/.start" ! -path "*/checkpoints/*" ! -path "*/.staging/*" > "$OUT/.files"
  tar czf "$OUT/h200-$CALL.tgz" -T "$OUT/.files"; }
run() {  # run BUDGET CMD...: start only if BUDGET seconds are left; stop at the deadline
  local budget=$1; shift
  if [ "$(left)" -lt "$budget" ]; then say "not started (needs ${budget} s, $(left) s left): $JOB"; return 1; fi
  say "start: $JOB"
  timeout "$(left)" "$@" 2>&1 | grep -v "$NOISE" | tee -a "$LOG" | tail -"${TAIL:-6}"
  LAST_RC=${PIPESTATUS[0]}
  say "done (exit $LAST_RC): $JOB"; pack
}

say "commit ${ATTNPAPER_GIT_SHA:-unknown}, $(python3 -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")')"
for JOB in "$@"; do
  IFS=: read -r kind a b c d <<< "$JOB"
  case $kind in
    tests)  # a failure stops the call: results of a commit whose step is wrong are not worth the GPU time.
      # Budget: on an H100 at 7e213ed the first 26 of these 32 tests took 296 s, one at a time, and the deadline
      # cut pytest's report (results/issue38/h100-7e213ed): -v names each test in the log as it ends, --durations
      # the slowest. Where pytest-xdist is installed (its wheel in .whl/) they run in 4 processes, since they
      # mostly compile on the CPU; test_busy.py runs alone after them (it reads the whole GPU's utilisation)
      par=(); python3 -c "import xdist" 2>/dev/null && par=(-n 4)
      if run 420 python3 -m pytest -v --durations=12 -p no:cacheprovider -m cuda "${par[@]}" tests/test_whole_step.py \
        tests/test_packed_linear.py tests/test_step.py tests/test_whole_mask.py tests/test_arms.py \
        tests/test_memory_cases.py tests/test_op_profile.py; then
        [ "$LAST_RC" = 0 ] && JOB="tests (test_busy.py)" && run 60 python3 -m pytest -v -p no:cacheprovider -m cuda \
          tests/test_busy.py
        [ "$LAST_RC" != 0 ] && { say "CUDA tests failed: no further jobs"; exit 1; }
      fi ;;
    runs)  # runs:LEN:VARIANTS:SEEDS[:ARM], one (variant, seed) per sweep call so the deadline cuts between runs
      len=$a; arm=${d:-}; set_arm=(--set model=$MODEL --set data=$DATA); dir=$R
      [ "${REHEARSE:-0}" = 1 ] && set_arm=(--smoke --set train_samples=64 --set test_samples=32)
      [ "$len" = 512 ] && { dir=$R/len512; set_arm+=(--set max_length=512); }
      case $arm in
        "") ;;
        fp16) dir=$R/artefacts/fp16; set_arm+=(--set precision=fp16) ;;
        dropout) dir=$R/artefacts/dropout; set_arm+=(--set attention_dropout=0.1) ;;
        nomask) dir=$R/artefacts/nomask; set_arm+=(--set layout=padded --set flash_backend=nomask) ;;
        elu) dir=$R/artefacts/elu; set_arm+=(--set feature_map=elu) ;;
        favor4x)  # 4 x the d log d features a layer of this model takes by default (MiniLM's heads of 32: 444)
          dir=$R/artefacts/favor4x; arm_model=$MODEL
          [ "${REHEARSE:-0}" = 1 ] && arm_model=bert-tiny-random  # the model --smoke runs
          features=$(python3 -c 'import sys; from attnpaper.model.build import default_num_features_of as d
print(4 * d(sys.argv[1]))' "$arm_model") || { say "no feature count for $arm_model: $JOB not run"; continue; }
          set_arm+=(--set num_features="$features") ;;
        *) say "unknown arm '$arm' in $JOB; valid: fp16, dropout, nomask, elu, favor4x"; continue ;;
      esac
      per=$([ "$len" = 512 ] && echo 150 || echo 90)  # seconds a run may take, papermill start to record
      if [ "${REUSE:-1}" = 1 ]; then  # one sweep, one kernel for all its runs (sweep --reuse-kernel); the
        # deadline stops it between or inside runs, and a later call resumes what it did not record: so it
        # starts where one run fits, as the runs one at a time do
        # shellcheck disable=SC2086  # VARIANTS and SEEDS: a,b -> a b
        run $per python3 -m attnpaper sweep --quiet --reuse-kernel --variants ${b//,/ } \
          --seeds ${c//,/ } --out "$dir" "${set_arm[@]}"
        continue
      fi
      for s in ${c//,/ }; do for v in ${b//,/ }; do
        JOB="runs:$len:$v:$s${arm:+:$arm}"
        run $per python3 -m attnpaper sweep --quiet --variants "$v" --seeds "$s" --out "$dir" "${set_arm[@]}" || break 2
      done; done ;;
    bench)  # bench:MODEL:LENGTHS:REPEATS[:t4]
      model=$([ "$a" = minilm ] && echo $MODEL || echo distilbert-base-random); dir=$R/bench
      modes=(--step-modes whole eager --reference)  # captured (a full compile a row): once, at 128 tokens
      [ "${b%%+*}" = 128 ] && modes=(--step-modes whole captured eager --once captured --reference)
      [ "${REHEARSE:-0}" = 1 ] && modes=(--step-modes eager)
      case ${d:-} in
        "") ;;
        t4) dir=$R/bench-t4; modes=(--step-modes eager --setup t4) ;;  # issue 39: the setup a T4 user had
        *) say "unknown bench setup '$d' in $JOB; valid: t4, or none"; continue ;;
      esac
      mkdir -p "$dir"
      # shellcheck disable=SC2086  # LENGTHS: 128+256 -> 128 256
      run 240 python3 -m attnpaper bench --model "$model" --lengths ${b//+/ } --steps 40 --repeats "$c" \
        --batch-size 32 --data $LENGTHS "${modes[@]}" "${TINY[@]}" --out "$dir/bench-$a-${b//+/-}-$CALL.json" ;;
    scaling-kernels)
      run 200 python3 -m attnpaper scaling kernels --out $R/scaling-kernels.json ;;
    scaling-model)
      run 300 python3 -m attnpaper scaling model --data $LENGTHS --out $R/scaling-model.json ;;
    memory)  # both arms and the four cases (nothing, model, gradients, optimizer) at DistilBERT-base's shape:
      # 9 processes. GPU seconds, estimated: the arms took 85 s on the H200 (c2: 4 fresh children, the kept
      # process), each case a process of 4 variants like the kept one, about 25-30 s: about 200 s in all
      mkdir -p $R/artefacts
      run 300 python3 -m attnpaper paper-memory --data $LENGTHS "${TINY[@]}" --out $R/artefacts/paper-memory.json ;;
    profile)  # every variant's eager step at DistilBERT-base's shape, each op counted (no timing): a fresh model
      # per variant, a warm-up step and 3 counted. GPU seconds not measured yet: on 2 CPU cores the five variants at
      # batch 4 counted in 48 s (fp32, one step each); a GPU adds the dispatch mode's host cost per op, not the CPU's math
      mkdir -p $R/artefacts; data=(--data $LENGTHS); [ "${REHEARSE:-0}" = 1 ] && data=()  # rehearsal: $ATTNPAPER_IMDB
      run 180 python3 -m attnpaper profile-ops --model distilbert-base-random --length 128 --batch-size 32 --steps 3 \
        "${data[@]}" "${TINY[@]}" --out $R/artefacts/op-profile.json ;;
    trainer)  # trainer:SEEDS, one seed per call of the command so the deadline cuts between seeds
      set_arm=(--model $MODEL --data $DATA)
      [ "${REHEARSE:-0}" = 1 ] && set_arm=(--model bert-tiny-random --data synthetic --train-samples 64 --test-samples 32)
      [ -z "$a" ] && say "trainer needs seeds, e.g. trainer:0,1,2,3,4"
      for s in ${a//,/ }; do
        JOB="trainer:$s"
        run 180 python3 -m attnpaper trainer-ref --seeds "$s" --out $R/trainer "${set_arm[@]}" || break
      done ;;
    *) say "unknown job '$JOB'; valid: tests, runs:LEN:VARIANTS:SEEDS[:ARM], bench:MODEL:LENGTHS:REPEATS[:t4], \
scaling-kernels, scaling-model, memory, profile, trainer:SEEDS" ;;
  esac
done
pack; say "end: $(wc -l < "$OUT/.files") files in $OUT/h200-$CALL.tgz"
