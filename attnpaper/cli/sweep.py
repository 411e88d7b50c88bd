"""`python -m attnpaper sweep`: the experiment notebook per (variant, seed), here or on several GPUs.

Its outcome is reported one way whichever runs it: the JSON summary on stdout and exit 0, 1 if a run
failed or the sweep was stopped, 130/143 when interrupted (what was kept and how to resume, one line).
"""

from __future__ import annotations

import ast
import functools
import json
import sys
from pathlib import Path

NAME = "sweep"
HELP = "run the experiment notebook per (variant, seed) with papermill"
ON_INTERRUPT = "records already under --out are kept; run the same command again to resume"
"""What an interrupt outside a run (while checking the plan) leaves: __main__ says it."""


def parse_set(items) -> dict:
    """['lr=1e-4', 'train_samples=None'] -> {'lr': 0.0001, 'train_samples': None}."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set takes name=value, got {item!r}")
        name, value = item.split("=", 1)
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name] = value  # a plain string, e.g. a path
    return out


def add_arguments(parser):
    from ..variants import PAPER_ORDER, VARIANTS

    parser.add_argument("--variants", nargs="+", default=list(PAPER_ORDER), help=f"from {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="one run per variant and seed")
    parser.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="override a notebook parameter (repeatable), e.g. --set lr=1e-4 --set data=DIR",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny random model on synthetic data (CPU, seconds)")
    parser.add_argument(
        "--force", action="store_true", help="rerun even when a record exists (a failed rerun keeps it)"
    )
    parser.add_argument(
        "--fresh", action="store_true", help="ignore checkpoints of unfinished runs and start them over"
    )
    parser.add_argument(
        "--keep-checkpoints", action="store_true", help="keep each run's last checkpoint after its record"
    )
    parser.add_argument("--out", default="results/local", help="folder for records/ and notebooks/")
    parser.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")
    parser.add_argument(
        "--notebook",
        default=None,
        help="the experiment notebook (default: chapters/07_experiment.ipynb of this checkout)",
    )
    parser.add_argument("--quiet", action="store_true", help="one line per run instead of streaming its progress")
    parser.add_argument(
        "--reuse-kernel",
        action="store_true",
        help="run the runs one after another in one kernel (imports and compiled code stay warm; a fresh "
        "one after a failure or a run that left GPU memory allocated)",
    )
    parser.add_argument(
        "--gpus",
        default=None,
        metavar="N|all",
        help="run on N GPUs at once, one run per GPU (workers split the runs through claims)",
    )


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def _without_option(argv: list[str], name: str) -> list[str]:
    """argv with ``name VALUE`` / ``name=VALUE`` left out."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out


def _checked(args, notebook):
    """The sweep to start, as a call without arguments; bad input raises here, before any run."""
    from ..experiment import sweep as SW

    SW.check_out(args.out)
    if args.gpus:  # one worker per GPU, each given this command line less --gpus
        gpus = SW.gpu_ids(args.gpus)
        SW.plan(args.variants, args.seeds, parse_set(args.set), args.smoke)  # bad input: once, here
        return functools.partial(SW.sweep_on_gpus, _without_option(args.argv, "--gpus"), gpus, log=_log)
    return functools.partial(
        SW.sweep,
        args.variants,
        args.seeds,
        args.out,
        parse_set(args.set),
        args.smoke,
        args.force,
        notebook=notebook,
        kernel_name=args.kernel,
        fresh=args.fresh,
        keep_checkpoints=args.keep_checkpoints,
        stream=not args.quiet,
        log=_log,
        reuse_kernel=args.reuse_kernel,
    )


def _interrupted(err) -> int:
    """One line saying what was kept and how to resume, the JSON summary so far; 130 (SIGINT) or 143 (SIGTERM)."""
    print(str(err), file=sys.stderr, flush=True)
    print(json.dumps(err.summary, indent=1), flush=True)
    return 143 if "SIGTERM" in str(err) else 130


def run(args) -> int:
    """The sweep's summary on stdout; exit 1 if a run failed or the sweep stopped, 130/143 if interrupted."""
    from ..experiment.sweep import NOTEBOOK, SweepInterrupted, SweepStopped, check_runner

    notebook = check_runner(Path(args.notebook) if args.notebook else NOTEBOOK, args.kernel)
    start = _checked(args, notebook)
    try:
        res = start()
    except SweepStopped as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except SweepInterrupted as err:
        return _interrupted(err)
    print(json.dumps(res, indent=1))
    return 1 if any(r["status"] == "failed" for r in res) else 0
