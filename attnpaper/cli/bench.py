"""`python -m attnpaper bench`: training-step time and peak memory of variants, side by side."""

from __future__ import annotations

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


def run(args) -> int:
    """Each model in turn, the second and later appending to --out."""
    from ..bench.step import bench

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
    return 0
