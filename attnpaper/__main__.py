"""Command line: `python -m attnpaper sweep|bench|bundle|table|paper-memory|scaling ...` (see --help of each)."""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path


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


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (and exit code 2)."""

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _interrupted(err) -> int:
    """One line saying what was kept and how to resume, the JSON summary so far; 130 (SIGINT) or 143 (SIGTERM)."""
    print(str(err), file=sys.stderr, flush=True)
    print(json.dumps(err.summary, indent=1), flush=True)
    return 143 if "SIGTERM" in str(err) else 130


def main(argv=None):
    from . import __version__
    from .variants import MODEL_ALIASES, VARIANTS

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["scaling"]:  # its own options: python -m attnpaper scaling --help
        from .bench.scaling import main as scaling_main

        return scaling_main(argv[1:])
    fmt = argparse.ArgumentDefaultsHelpFormatter
    ap = _Parser(prog="python -m attnpaper", description=__doc__, formatter_class=fmt)
    ap.add_argument("--version", action="version", version=f"attnpaper {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    models = f"{', '.join(MODEL_ALIASES)}, a local directory or a hub name"

    sw = sub.add_parser(
        "sweep", help="run the experiment notebook per (variant, seed) with papermill", formatter_class=fmt
    )
    sw.add_argument(
        "--variants", nargs="+", default=["baseline", "flash", "linear", "hybrid"], help=f"from {', '.join(VARIANTS)}"
    )
    sw.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    sw.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="override a notebook parameter (repeatable), e.g. --set lr=1e-4 --set data=DIR",
    )
    sw.add_argument("--smoke", action="store_true", help="tiny random model on synthetic data (CPU, seconds)")
    sw.add_argument("--force", action="store_true", help="rerun even when a record exists (a failed rerun keeps it)")
    sw.add_argument("--fresh", action="store_true", help="ignore checkpoints of unfinished runs and start them over")
    sw.add_argument("--keep-checkpoints", action="store_true", help="keep each run's last checkpoint after its record")
    sw.add_argument("--out", default="results/local", help="folder for records/ and notebooks/")
    sw.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")
    sw.add_argument(
        "--notebook",
        default=None,
        help="the experiment notebook (default: chapters/07_experiment.ipynb of this checkout)",
    )
    sw.add_argument("--quiet", action="store_true", help="one line per run instead of streaming its progress")
    sw.add_argument(
        "--gpus",
        default=None,
        metavar="N|all",
        help="run on N GPUs at once, one run per GPU (workers split the runs through claims)",
    )

    be = sub.add_parser(
        "bench", help="training-step time and peak memory of variants, side by side", formatter_class=fmt
    )
    be.add_argument("--variants", nargs="+", default=list(VARIANTS), help=f"from {', '.join(VARIANTS)}")
    be.add_argument("--model", nargs="+", default=["distilbert-base-random"], help=f"one or more of: {models}")
    be.add_argument(
        "--step-modes",
        nargs="+",
        default=None,
        help="from whole, captured, compiled, eager (measured side by side); default: whole, "
        "captured and eager on a GPU, eager on a CPU (where the others would run eager)",
    )
    be.add_argument(
        "--reference",
        action="store_true",
        help="also measure transformers' own model (no attnpaper), eager and under "
        "torch.compile(mode='reduce-overhead') (a GPU only)",
    )
    be.add_argument("--append", action="store_true", help="add the rows to an existing --out file")
    be.add_argument("--lengths", nargs="+", type=int, default=[128], help="max_length of each measurement")
    be.add_argument("--steps", type=int, default=40, help="timed training steps per measurement")
    be.add_argument("--repeats", type=int, default=2, help="measurements per (variant, length, mode)")
    be.add_argument("--batch-size", type=int, default=32)
    be.add_argument(
        "--data",
        default=None,
        help="review lengths: an IMDb folder, a .npy of token counts (default: $ATTNPAPER_IMDB or hub)",
    )
    be.add_argument("--out", default=None, help="write the measurements to this JSON file")

    bu = sub.add_parser(
        "bundle", help="prepare a self-contained folder for an offline GPU machine", formatter_class=fmt
    )
    bu.add_argument("--out", default="bundle")
    bu.add_argument("--data", default=None, help="IMDb source (default: $ATTNPAPER_IMDB or hub)")
    bu.add_argument("--max-length", type=int, default=128)
    bu.add_argument("--wheels", default=".whl", help="folder of wheels the GPU machine lacks")
    bu.add_argument(
        "--xz",
        action="store_true",
        help="also write bundle/xz: weights and token ids xz-compressed (fits 64 MiB with 512 tokens)",
    )

    tb = sub.add_parser("table", help="summarise records into the results table", formatter_class=fmt)
    tb.add_argument("dirs", nargs="+", help="folders holding records/*.json")
    tb.add_argument(
        "--format",
        default="text",
        choices=("text", "markdown", "latex", "csv"),
        help="text for the terminal; markdown, latex (booktabs) or csv to paste",
    )

    pm = sub.add_parser(
        "paper-memory",
        help="the paper's memory column put to the test: its four variants in one process, kept alive, "
        "against a fresh process each",
        formatter_class=fmt,
    )
    pm.add_argument("--variants", nargs="+", default=["baseline", "flash", "linear", "hybrid"], help="in run order")
    pm.add_argument("--model", default="distilbert-base-random", help="a random-init alias")
    pm.add_argument("--max-length", type=int, default=128)
    pm.add_argument("--batch-size", type=int, default=32)
    pm.add_argument("--steps", type=int, default=20, help="eager AdamW steps per variant")
    pm.add_argument("--data", default=None, help="review lengths: an IMDb folder or a .npy of token counts")
    pm.add_argument("--arms", nargs="+", default=["kept", "fresh"], help="kept (one process), fresh (one each)")
    pm.add_argument("--out", default=None, help="write the report (JSON) here")
    pm.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a fresh arm's child: one variant, one row

    sub.add_parser(
        "scaling",
        help="attention kernels and the training step over sequence length (python -m attnpaper scaling --help)",
        add_help=False,
    )

    args = ap.parse_args(argv)
    try:
        if args.cmd == "sweep":
            from .experiment.sweep import NOTEBOOK, SweepInterrupted, SweepStopped, check_runner, sweep

            notebook = check_runner(Path(args.notebook) if args.notebook else NOTEBOOK, args.kernel)
            if args.gpus:
                from .experiment.sweep import gpu_ids, plan, sweep_on_gpus

                gpus = gpu_ids(args.gpus)
                plan(args.variants, args.seeds, parse_set(args.set), args.smoke)  # bad input: once, here
                worker_argv = _without_option(argv[1:], "--gpus")
                try:
                    res = sweep_on_gpus(worker_argv, gpus, log=lambda msg: print(msg, file=sys.stderr, flush=True))
                except SweepStopped as err:
                    print(f"error: {err}", file=sys.stderr)
                    return 1
                except SweepInterrupted as err:
                    return _interrupted(err)
                print(json.dumps(res, indent=1))
                return 1 if any(r["status"] == "failed" for r in res) else 0
            try:
                res = sweep(
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
                    log=lambda msg: print(msg, file=sys.stderr, flush=True),
                )
            except SweepStopped as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
            except SweepInterrupted as err:
                return _interrupted(err)
            print(json.dumps(res, indent=1))
            return 1 if any(r["status"] == "failed" for r in res) else 0
        if args.cmd == "bench":
            from .bench.step import bench

            for model in args.model:
                bench(
                    args.variants,
                    model,
                    args.lengths,
                    args.steps,
                    args.repeats,
                    args.batch_size,
                    args.data,
                    args.out,
                    step_modes=args.step_modes,
                    append=args.append or model != args.model[0],
                    reference=args.reference,
                )
        elif args.cmd == "bundle":
            from .experiment.bundle import make_bundle

            make_bundle(args.out, args.data, args.max_length, args.wheels, xz=args.xz)
        elif args.cmd == "paper-memory":
            from .bench import artefacts as A

            if args.one:  # a child of the fresh arm: its row as the last line
                lengths = A.imdb_lengths_for(args.data, args.max_length)
                rows = A.run_kept([args.one], args.model, args.max_length, args.batch_size, args.steps, lengths)
                print(json.dumps(rows[0]))
            else:
                A.paper_memory(
                    args.variants,
                    args.model,
                    args.max_length,
                    args.batch_size,
                    args.steps,
                    args.data,
                    args.out,
                    args.arms,
                    log=lambda msg: print(msg, flush=True),
                )
        elif args.cmd == "table":
            from .analysis.results import load_records
            from .analysis.tables import format_table

            print(format_table(load_records(*args.dirs), args.format))
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
