#!/usr/bin/env bash
# Issue 38's measurement: a run's wall time end to end and its parts, this tree against an earlier commit,
# side by side in one GPU call on one card. Each job runs as scripts/campaign.sh runs it, first from the
# earlier commit's checkout in .base/, then from this tree, each with a compile cache of its own (a variant's
# first run there is cold, its next warm), and scripts/speed_table.py prints both, variant by variant.
#   git worktree add --detach .base fed3a83 && git -C .base rev-parse HEAD > .base/.sha   # here, before the call
# (.base is carried and git-ignored; its records name its own commit, from .base/.sha; bundle/ is made at
# this tree's commit, as for the campaign, so this tree's records name this one).
#   DEADLINE=560 bash scripts/speed_check.sh runs:128:sdpa,flash:0,1 runs:512:linear:0
# Records go to $SPEED (default /tmp/speed)/{base,new}/; the table and the logs into $OUT. campaign.sh runs
# a job's runs in one kernel (sweep --reuse-kernel; REUSE=0: one each); a commit without that option ignores it.
# TREES (default "base new"): the trees to run each job in, in that order ("new" alone: this tree's only).
# REHEARSE=1 on a CPU (the venv's python first on PATH): the same jobs on the rehearsal's tiny model.
set -uo pipefail
START=$(date +%s); DEADLINE=${DEADLINE:-560}; OUT=${OUT:-/tmp/attnpaper-out}; SPEED=${SPEED:-/tmp/speed}
[ -d .base/attnpaper ] && [ -f .base/.sha ] || { echo "no .base/ checkout with .base/.sha: see the header"; exit 2; }
mkdir -p "$OUT" "$SPEED" .base/bundle
for f in bundle/*; do [ "$f" = bundle/GIT_SHA ] || ln -sfn "$PWD/$f" ".base/$f"; done  # the same ids and weights
cp .base/.sha .base/bundle/GIT_SHA  # its records say its commit
[ -e .base/.whl ] || ln -s "$PWD/.whl" .base/.whl
for JOB in "$@"; do
  for tree in ${TREES:-base new}; do
    left=$((DEADLINE - ($(date +%s) - START)))
    dir=$([ $tree = base ] && echo .base || echo .)
    echo "[$(($(date +%s) - START)) s] $tree: $JOB ($left s left)" | tee -a "$OUT/speed-log.txt"
    (cd $dir && TORCHINDUCTOR_CACHE_DIR=$SPEED/inductor-$tree RESULTS=$SPEED/$tree DEADLINE=$left CALL=$tree \
      OUT=$OUT/$tree bash scripts/campaign.sh "$JOB") >> "$OUT/speed-log.txt" 2>&1
  done
done
[ "${REHEARSE:-0}" = 1 ] && SPEED_BASE=$(cd .base && pwd)/results/rehearsal SPEED_NEW=results/rehearsal
python3 scripts/speed_table.py "${SPEED_BASE:-$SPEED/base}" "${SPEED_NEW:-$SPEED/new}" | tee "$OUT/speed-table.txt"
