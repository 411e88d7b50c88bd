"""Packed linear attention's chunk size against step time (GPU machine): what LINEAR_CHUNKS is chosen from.

    python scripts/chunk_sweep.py --out chunks.json MODEL:LENGTH:CHUNK[,CHUNK...] ...
e.g. ``bundle/all-MiniLM-L6-v2-fp16:128:16,32,64,128 distilbert-base-random:512:16,64,128``. Each
(model, length, chunk) trains the linear variant (whole step, batch 32, random ids of IMDb lengths)
for --steps steps, as the benchmark does, and prints wall and GPU busy ms per step, compile seconds,
peak memory, the padding the chunks add and the eight GPU ops with the most time. --variants adds
other variants (chunks apply to linear and hybrid; the others are measured once per shape).
"""

import argparse
import json
import sys

import attnpaper.training.batches as P
from attnpaper.bench.step import imdb_lengths, measure
from attnpaper.experiment.records import git_sha
from attnpaper.training.measure import device_info


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shapes", nargs="+", help="MODEL:LENGTH:CHUNK[,CHUNK...]")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--lengths", default="bundle/imdb-train-lengths.npy")
    ap.add_argument("--variants", nargs="+", default=["linear"])
    args = ap.parse_args()
    rows, sha = [], git_sha()
    for shape in args.shapes:
        model, length, chunks = shape.rsplit(":", 2)
        lengths = imdb_lengths(args.lengths, int(length))
        for variant in args.variants:
            for chunk in [int(c) for c in chunks.split(",")] if variant in ("linear", "hybrid") else [None]:
                if chunk:
                    P.LINEAR_CHUNK = chunk  # chunk_for reads it at each call
                m = measure(variant, model, int(length), args.steps, 32, lengths, "whole")
                row = {
                    "variant": variant,
                    "model": model,
                    "max_length": int(length),
                    "chunk": chunk,
                    "batch_size": 32,
                    "git_sha": sha,
                    **m,
                }
                rows.append(row)
                print(
                    f"{model[-24:]:24s} {length:>4} {variant:7s} chunk {chunk or '-':>4} "
                    f"wall {m['step_time_ms_median'] or 0:6.2f} busy {m['gpu_busy_ms_per_step'] or 0:6.2f} ms "
                    f"compile {m['compile_time_s'] or 0:5.1f} s peak {m['peak_memory_mb'] or 0:6.0f} MB "
                    f"pad {m['padding_fraction'] or 0:.3f}",
                    flush=True,
                )
                for name, ms in m.get("top_gpu_ops") or []:
                    print(f"      {ms:7.3f} ms  {name}", flush=True)
                with open(args.out, "w") as f:
                    json.dump({"versions": device_info(), "git_sha": sha, "rows": rows}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
