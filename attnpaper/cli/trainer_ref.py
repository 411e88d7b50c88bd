"""`python -m attnpaper trainer-ref`: transformers' Trainer on the same data, one record per seed (issue 39).

Exit 0 when every seed has an ok record, 1 if a seed failed (its record says why; the others still run),
2 for bad input (one line, before any model or data is loaded), 130/143 when interrupted.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ..variants import MODEL_ALIASES, OFFLINE_MODEL

NAME = "trainer-ref"
HELP = (
    "the reference row: transformers' Trainer with no attnpaper model code (sdpa, dynamic padding, eager, "
    "bf16 on a GPU) at the paper's hyperparameters, one record per seed"
)
ON_INTERRUPT = "the seeds recorded under --out are kept; the same command skips them and runs the rest"
"""What an interrupt leaves: __main__ says it."""


def add_arguments(parser):
    models = f"{', '.join(MODEL_ALIASES)}, a local directory or a hub name"
    parser.add_argument("--model", default=OFFLINE_MODEL, help=f"one of: {models}")
    parser.add_argument(
        "--data",
        default=None,
        help="IMDb: a folder of train/test.parquet, a token cache .npz, 'synthetic' or 'hub' "
        "(default: $ATTNPAPER_IMDB, else the hub)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="one run per seed, in order")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per review (longer ones are cut)")
    parser.add_argument("--train-samples", type=int, default=None, help="training reviews (default: all)")
    parser.add_argument("--test-samples", type=int, default=None, help="test reviews (default: all)")
    parser.add_argument(
        "--out", required=True, help="the folder the records go to (required, default: none; e.g. results/trainer)"
    )
    parser.add_argument(
        "--force", action="store_true", help="run a seed again even when it has an ok record (a failure keeps it)"
    )


def check_out(out: str) -> Path:
    """--out names a folder (existing or not); ValueError in one line otherwise."""
    if not out.strip():
        raise ValueError(f"--out {out!r} is empty; give the folder the records go to, e.g. --out results/trainer")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the records (existing or new)")
    return path


OPTIONS = {"seed": "--seeds", "model": "--model", "data": "--data", "max_length": "--max-length"}
OPTIONS |= {"train_samples": "--train-samples", "test_samples": "--test-samples"}
"""RunConfig's fields that this command sets, and the options that set them."""


def as_options(message: str) -> str:
    """'bad parameter max_length=4: ...' -> '--max-length 4: ...' for the fields this command's options set."""
    return re.sub(r"bad parameter (\w+)=", lambda m: f"{OPTIONS[m[1]]} " if m[1] in OPTIONS else m[0], message)


def run(args) -> int:
    """Every input checked first (the runs' checks: data, model, lengths, samples), then each seed in turn."""
    out = check_out(args.out)  # before importing torch: a typo costs no time
    from ..bench import trainer_ref as T
    from ..experiment.checks import check_plan
    from ..training.clock import Clock
    from ..training.data import default_source

    clock = Clock()  # the first seed's, as a run's: launch and imports are its "start", the checks its "other"
    data = args.data if args.data is not None else default_source()
    seeds = list(dict.fromkeys(args.seeds))  # a seed given twice runs once
    configs = [
        T.reference_config(args.model, data, s, args.max_length, args.train_samples, args.test_samples) for s in seeds
    ]
    try:
        check_plan(configs)
    except ValueError as err:  # the runs' checks name RunConfig's fields: name this command's options instead
        raise ValueError(as_options(str(err))) from None
    failed, ran = [], False  # ran: a seed has trained in this process (a later one's imports are warm)
    for cfg in configs:
        try:
            rec = T.run_seed(cfg, out, force=args.force, first_in_process=not ran, clock=None if ran else clock)
            ran = ran or rec is not None
        except Exception as err:  # recorded as failed by run_seed; the next seeds still run
            print(f"seed {cfg.seed} failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
            failed.append(cfg.seed)
            ran = True
    if failed:
        print(f"failed seeds: {' '.join(map(str, failed))} (their records under {out} say why)", file=sys.stderr)
    return 1 if failed else 0
