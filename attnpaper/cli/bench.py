"""`python -m attnpaper bench`: training-step time and peak memory of variants, side by side."""

from __future__ import annotations

from ..files import interrupted
from ..variants import MODEL_ALIASES, VARIANTS

NAME = "bench"
HELP = "training-step time and peak memory of variants, side by side"


def add_arguments(parser):
    models = f"{', '.join(MODEL_ALIASES)}, a local directory or a hub name"
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help=f"from {', '.join(VARIANTS)}")
    parser.add_argument("--model", nargs="+", default=["distilbert-base-random"], help=f"one or more of: {models}")
    parser.add_argument(
        "--step-modes",
        nargs="+",
        default=None,
        help="from whole, captured, compiled, eager (measured side by side); default: whole, "
        "captured and eager on a GPU, eager on a CPU (where the others would run eager)",
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="also measure transformers' own model (no attnpaper), eager and under "
        "torch.compile(mode='reduce-overhead') (a GPU only)",
    )
    parser.add_argument(
        "--once",
        nargs="+",
        default=[],
        help="step modes measured only in the first repeat at the first length (e.g. captured)",
    )
    parser.add_argument(
        "--setup",
        default="ours",
        help="ours (default), or t4: the setup a T4 user had, on this GPU (a T4's kernels, fp16 with a "
        "gradient scaler (fp32 on a CPU), each batch padded to its longest review; with --step-modes eager)",
    )
    parser.add_argument("--append", action="store_true", help="add the rows to an existing --out file")
    parser.add_argument("--lengths", nargs="+", type=int, default=[128], help="max_length of each measurement")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per measurement")
    parser.add_argument("--repeats", type=int, default=2, help="measurements per (variant, length, mode)")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per batch")
    parser.add_argument(
        "--data",
        default=None,
        help="review lengths: an IMDb folder, a .npy of token counts (default: $ATTNPAPER_IMDB or hub)",
    )
    parser.add_argument("--out", default=None, help="write the measurements to this JSON file")


def _interrupted(why: str, rows: int, out) -> int:
    """One line saying what was kept; 130 (SIGINT) or 143 (SIGTERM)."""
    kept = f"kept in {out} (rerun with --append to add to it)" if out else "not kept (no --out was given)"
    return interrupted(why, f"{rows} measurement(s) made before it, {kept}; the one in progress is lost")


def run(args) -> int:
    """Each model in turn, the second and later appending to --out; every model, length and the data
    checked first. Ctrl-C or SIGTERM: one line saying which measurements were kept, exit 130 or 143."""
    from ..bench.step import BenchInterrupted, bench, check_bench, check_setup
    from ..training.data import default_source

    if args.append and not args.out:
        raise ValueError("--append adds rows to the --out file; give --out FILE (a bench report), or drop --append")
    modes = args.step_modes or ["eager"]  # the default is chosen (and checked) per device by bench
    for model in args.model:
        source = args.data or default_source()
        check_bench(args.variants, args.steps, args.repeats, args.batch_size, modes, model, args.lengths, source)
    check_setup(args.setup, modes, args.reference)
    rows = 0
    try:  # main() turns SIGTERM into KeyboardInterrupt too (files.signals_interrupt)
        for model in args.model:
            rows += len(_bench_one(bench, args, model))
    except BenchInterrupted as err:
        return _interrupted(err.signal_name, rows + err.rows, err.out)
    except KeyboardInterrupt as err:  # while reading the data, before the first measurement of a model
        return _interrupted(str(err) or "SIGINT", rows, args.out)
    return 0


def _bench_one(bench, args, model) -> list:
    return bench(
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
        once=tuple(args.once),
        setup=args.setup,
    )
