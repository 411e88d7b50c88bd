"""`python -m attnpaper profile-ops`: an op-level profile of one eager training step per variant, and
chapter 2's roofline applied to it on a GPU of ``cost.GPUS`` (the paper's T4 by default)."""

from __future__ import annotations

import json
from pathlib import Path

from ..analysis.roofline import GPU_ALIASES, MATMUL_PEAKS
from ..variants import VARIANTS

NAME = "profile-ops"
HELP = (
    "calls, FLOPs and bytes of every aten op of one eager training step per variant (forward, backward, "
    "optimizer), and the step each predicts on a GPU by the roofline (time = max(FLOPs / peak, bytes / bandwidth))"
)
PRECISIONS = ("auto", "fp32", "bf16")  # bench.op_profile.PRECISIONS, here without torch (a test keeps them equal)


def add_arguments(parser):
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help=f"from {', '.join(VARIANTS)}")
    parser.add_argument("--model", default="distilbert-base-random", help="a random-init alias (its shape)")
    parser.add_argument("--length", type=int, default=128, help="max_length: tokens per review at most")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per batch")
    parser.add_argument("--steps", type=int, default=1, help="eager steps counted per variant (after one warm-up)")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto: bf16 autocast on a GPU, fp32 on a CPU (bytes count the dtypes that ran)",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="review lengths: an IMDb folder or a .npy of token counts (default: $ATTNPAPER_IMDB or hub)",
    )
    parser.add_argument("--out", default=None, help="write the profile (JSON) here")
    parser.add_argument(
        "--from",
        dest="profile",
        default=None,
        help="predict from this saved profile instead of counting (no torch needed)",
    )
    parser.add_argument("--gpu", default="t4", help=f"the GPU predicted: {', '.join(GPU_ALIASES)} (analysis.cost.GPUS)")
    parser.add_argument(
        "--matmul-peak",
        default="tensor",
        choices=MATMUL_PEAKS,
        help="matrix products at the tensor cores' peak (16-bit) or the CUDA cores' fp32 peak (a T4 in fp32)",
    )
    parser.add_argument(
        "--elementwise-flops",
        type=float,
        default=0.0,
        help="FLOPs charged per element to ops with no FLOP formula, at the CUDA cores' fp32 peak",
    )
    parser.add_argument(
        "--launch-us", type=float, default=0.0, help="host time per kernel launch in microseconds (0: not counted)"
    )


def _check_prediction_args(args) -> None:
    """The prediction's options, refused in one line before any work."""
    from ..analysis.roofline import gpu_spec

    gpu_spec(args.gpu, args.matmul_peak)
    for flag, value in (("--elementwise-flops", args.elementwise_flops), ("--launch-us", args.launch_us)):
        if not value >= 0 or value == float("inf"):
            raise ValueError(f"{flag} must be a finite number >= 0, got {value}")


def _read_profile(path) -> dict:
    """A saved op profile, or ValueError in one line naming the file."""
    from ..analysis.roofline import check_profile

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--from {path}: no such file; give an op profile written by profile-ops --out")
    try:
        profile = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"--from {path} is not JSON; give an op profile written by profile-ops --out") from None
    try:
        return check_profile(profile)
    except ValueError as err:
        raise ValueError(f"--from {path}: {err}") from None


def _paper() -> dict:
    """The paper's seconds per step by variant (its training time over its steps)."""
    from ..analysis.results import PAPER
    from ..analysis.roofline import paper_step_s

    return {v: paper_step_s(t) for v, t in PAPER["train_time_s"].items()}


def run(args) -> int:
    """Count (or read, with --from) the profile, then print each variant's predicted step on --gpu."""
    from ..analysis import roofline as R

    _check_prediction_args(args)
    if args.profile is not None:
        if args.out:
            raise ValueError("--from reads a saved profile and --out writes a new one; give one of them")
        profile = _read_profile(args.profile)
    else:
        from ..bench import op_profile as O
        from ..bench.step import check_out_file
        from ..training.data import default_source

        source = args.data or default_source()
        sizes = (args.length, args.batch_size, args.steps)
        O.check_profile_args(args.variants, args.model, *sizes, args.precision, source)
        out = check_out_file(args.out)
        profile = O.profile_ops(args.variants, args.model, *sizes, source, args.precision, log=_log)
        if out:
            O.save(profile, out)
            print(f"wrote {out}")
    pred = R.predict(profile, args.gpu, args.matmul_peak, args.elementwise_flops, args.launch_us * 1e-6)
    print(
        f"profile: {profile['model']}, {profile['length']} tokens, batch {profile['batch_size']}, "
        f"{profile['precision']}, eager, on {profile['device']} (commit {str(profile['git_sha'])[:7]})"
    )
    print(R.format_prediction(pred, _paper()))
    return 0


def _log(msg) -> None:
    print(msg, flush=True)
