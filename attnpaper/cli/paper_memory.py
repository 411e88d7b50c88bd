"""`python -m attnpaper paper-memory`: the paper's memory column put to the test."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..bench.memory_cases import CASES
from ..files import interrupted
from ..variants import PAPER_ORDER

NAME = "paper-memory"
HELP = (
    "the paper's memory column put to the test: its four variants in one process, kept alive, "
    "against a fresh process each, and the step of the peak per run for what each case keeps"
)


def add_arguments(parser):
    parser.add_argument("--variants", nargs="+", default=list(PAPER_ORDER), help="in run order")
    parser.add_argument("--model", default="distilbert-base-random", help="a random-init alias")
    parser.add_argument(
        "--max-length", type=int, default=128, help="tokens per review at most (8 to the model's positions)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per batch")
    parser.add_argument("--steps", type=int, default=20, help="eager AdamW steps per variant")
    parser.add_argument("--data", default=None, help="review lengths: an IMDb folder or a .npy of token counts")
    parser.add_argument("--arms", nargs="+", default=["kept", "fresh"], help="kept (one process), fresh (one each)")
    parser.add_argument(
        "--cases",
        nargs="*",
        default=list(CASES),
        help="what each run leaves alive, each case a process of its own: nothing, model, gradients (model and "
        "gradients), optimizer (model, gradients and AdamW state); --cases alone runs none",
    )
    parser.add_argument("--out", default=None, help="write the report (JSON) here")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a fresh arm's child: one variant, one row
    parser.add_argument("--in-case", default=None, help=argparse.SUPPRESS)  # a case's child: its rows


def run(args) -> int:
    from ..bench import artefacts as A

    if args.one:  # a child of the fresh arm: its row as the last line
        lengths = A.imdb_lengths_for(args.data, args.max_length)
        rows = A.run_kept([args.one], args.model, args.max_length, args.batch_size, args.steps, lengths)
        print(json.dumps(rows[0]))
        return 0
    if args.in_case:  # a case's child: the variants in order, its rows as the last line
        from ..bench import memory_cases as M

        lengths = A.imdb_lengths_for(args.data, args.max_length)
        rows = M.run_case(
            args.in_case, args.variants, args.model, args.max_length, args.batch_size, args.steps, lengths
        )
        print(json.dumps(rows))
        return 0
    try:  # main() turns SIGTERM into KeyboardInterrupt too (files.signals_interrupt)
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
            cases=args.cases,
        )
    except KeyboardInterrupt as err:
        return _interrupted(str(err) or "SIGINT", args.out)
    return 0


def _interrupted(why: str, out) -> int:
    """One line saying what was kept (every row and every finished case is written as it comes); 130
    (SIGINT) or 143 (SIGTERM)."""
    report = json.loads(Path(out).read_text()) if out and Path(out).is_file() else {}
    rows, cases = len(report.get("rows", [])), len(report.get("cases", {}))
    kept = f"{rows} row(s)" + (f" and {cases} case(s)" if cases else "") + f" kept in {out}"
    kept = kept if out else "nothing kept (no --out was given)"
    return interrupted(why, f"{kept}; the variant or case in progress is lost")
