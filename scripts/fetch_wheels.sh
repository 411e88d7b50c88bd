#!/usr/bin/env bash
# Download the wheels listed in scripts/gpu_wheels.txt (papermill + ipykernel for
# the offline CPython 3.12 x86_64 GPU machine) into DIR (default .whl), no deps.
# Usage: scripts/fetch_wheels.sh [DIR]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
list="$here/gpu_wheels.txt"
dest="${1:-.whl}"
mkdir -p "$dest"

mapfile -t reqs < <(grep -vE '^[[:space:]]*(#|$)' "$list" | sed 's/[[:space:]]*#.*$//')

python3 -m pip download --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 \
  -d "$dest" "${reqs[@]}"

echo "wheels: $(ls "$dest"/*.whl | wc -l) (listed: ${#reqs[@]})"
du -ch "$dest"/*.whl | tail -n 1
