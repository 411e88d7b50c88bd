"""Where the host spends a training step: cProfile over a short benchmark run (GPU machine).

    python scripts/host_profile.py MODEL VARIANT STEP_MODE [LENGTH]
Prints the 20 functions with the most own time; a step bound by the host shows up here, not in
the GPU profile.
"""

import cProfile
import pstats
import sys

from attnpaper.bench.step import imdb_lengths, random_split
from attnpaper.training.config import RunConfig
from attnpaper.training.loop import train

model, variant, mode = sys.argv[1:4]
length = int(sys.argv[4]) if len(sys.argv) > 4 else 128
split = random_split(
    imdb_lengths(sys.argv[5] if len(sys.argv) > 5 else "bundle/imdb-train-lengths.npy", length), 32 * 200, seed=0
)
cfg = RunConfig(
    variant=variant, model=model, max_length=length, max_steps=200, eval=False, step_mode=mode, data="(random)"
)
train(RunConfig(**{**cfg.to_dict(), "max_steps": 10}), splits={"train": split, "test": split}, progress=False)
prof = cProfile.Profile()
prof.enable()
res = train(cfg, splits={"train": split, "test": split}, progress=False)
prof.disable()
print(f"{variant} {res['step_mode']}: {res['step_time_ms_median']:.2f} ms/step, compile {res['compile_time_s']:.1f} s")
pstats.Stats(prof).sort_stats("tottime").print_stats(20)
