"""`python -m attnpaper scaling kernels|model|all`: attention kernels and the training step over length.

Options and their defaults come from attnpaper.bench.scaling, which imports torch only to measure.
"""

from __future__ import annotations

from pathlib import Path

from ..bench import scaling as SC
from ..variants import VARIANTS

NAME = "scaling"
HELP = "attention kernels and the training step over sequence length (python -m attnpaper scaling --help)"
ON_INTERRUPT = "every row measured before it is in --out (rewritten after each)"
"""What an interrupt leaves: __main__ says it."""


def _lengths_and_tokens(parser, kind, lengths, tokens, prefixed):
    """--lengths/--tokens of one sweep (--{kind}-lengths/--{kind}-tokens under 'all', which runs both)."""
    flag = f"--{kind}-" if prefixed else "--"
    parser.add_argument(
        f"{flag}lengths", dest=f"{kind}_lengths", nargs="+", type=int, default=list(lengths), help="lengths N"
    )
    parser.add_argument(
        f"{flag}tokens", dest=f"{kind}_tokens", type=int, default=tokens, help="tokens per batch (batch = tokens / N)"
    )


def _kernel_options(p, prefixed):
    _lengths_and_tokens(p, "kernel", SC.KERNEL_LENGTHS, SC.KERNEL_TOKENS, prefixed)
    p.add_argument(
        "--mechanisms", nargs="+", default=list(SC.MECHANISMS), help=f"from {', '.join(SC.MECHANISMS)}; default: all"
    )
    p.add_argument("--passes", nargs="+", default=list(SC.PASSES), help=f"from {', '.join(SC.PASSES)}")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls before the timed ones")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per (N, mechanism, pass)")


def _model_options(p, prefixed):
    _lengths_and_tokens(p, "model", SC.MODEL_LENGTHS, SC.MODEL_TOKENS, prefixed)
    p.add_argument("--variants", nargs="+", default=list(SC.MODEL_VARIANTS), help=f"from {', '.join(VARIANTS)}")
    p.add_argument(
        "--model",
        default="distilbert-base-random",
        help="a random-init alias: distilbert-base-random or bert-tiny-random",
    )
    p.add_argument("--steps", type=int, default=20, help="timed steps per (variant, N)")
    p.add_argument("--data", default=None, help="IMDb lengths: a .npy of token counts or an IMDb folder")
    p.add_argument(
        "--step-mode",
        default="auto",
        help="auto (whole on a GPU: one CUDA graph per step), whole, captured, compiled or eager",
    )
    p.add_argument(
        "--paper-batch",
        type=int,
        default=SC.PAPER_BATCH,
        help="also measure this batch size at N <= 512, as the bench does (0: not)",
    )


def add_arguments(parser):
    """Sub-commands kernels, model and all (both, with prefixed --kernel-/--model- lengths and tokens)."""
    parser.description = SC.__doc__
    sub = parser.add_subparsers(dest="what", metavar="{kernels,model,all}", required=True)
    fmt = parser.formatter_class
    ke = sub.add_parser("kernels", help="each attention mechanism alone over N", formatter_class=fmt)
    mo = sub.add_parser("model", help="the training step of each variant over N", formatter_class=fmt)
    al = sub.add_parser("all", help="kernels, then model; reports in --out-dir", formatter_class=fmt)
    for p in (ke, al):
        _kernel_options(p, prefixed=p is al)
    for p in (mo, al):
        _model_options(p, prefixed=p is al)
    for p in (ke, mo):
        p.add_argument("--out", default=None, help="write the report (JSON) here")
        p.add_argument("--append", action="store_true", help="keep the rows of --out at other lengths")
    al.add_argument("--out-dir", default="results/local", help="scaling-kernels.json and scaling-model.json go here")


def _check(args):
    """Every option checked, then the GPU: bad input is refused (ValueError) before anything is measured."""
    if args.what in ("kernels", "all"):
        SC.check_lengths(list(args.kernel_lengths), args.kernel_tokens)
        SC.check_names(list(args.mechanisms), SC.MECHANISMS, "mechanism(s)")
        SC.check_names(list(args.passes), SC.PASSES, "pass(es)")
        SC.check_count(args.warmup, "warmup", 0), SC.check_count(args.repeats, "repeats")
    if args.what in ("model", "all"):  # bad model arguments fail before the kernels are measured
        SC.check_model(
            args.model_lengths, args.model_tokens, args.variants, args.model, args.steps, args.data, args.step_mode
        )
        SC.check_count(args.paper_batch, "--paper-batch", 0)
    import torch

    if not torch.cuda.is_available():
        raise ValueError(
            f"scaling {args.what} measures GPU kernels and no CUDA GPU is visible here; run it on a "
            "GPU machine (on a CPU it would take long and say nothing about a GPU)"
        )


def run(args) -> int:
    _check(args)
    out_dir = Path(getattr(args, "out_dir", "."))
    if args.what in ("kernels", "all"):
        SC.run_kernels(
            args.kernel_lengths,
            args.kernel_tokens,
            args.mechanisms,
            args.passes,
            args.warmup,
            args.repeats,
            args.out if args.what == "kernels" else out_dir / "scaling-kernels.json",
            append=getattr(args, "append", False),
        )
    if args.what in ("model", "all"):
        SC.run_model(
            args.model_lengths,
            args.model_tokens,
            args.variants,
            args.model,
            args.steps,
            args.data,
            args.step_mode,
            args.out if args.what == "model" else out_dir / "scaling-model.json",
            append=getattr(args, "append", False),
            paper_batch=args.paper_batch,
        )
    return 0
