"""`python -m attnpaper bundle`: a self-contained folder for an offline GPU machine."""

from __future__ import annotations

NAME = "bundle"
HELP = "prepare a self-contained folder for an offline GPU machine"
ON_INTERRUPT = "the --out folder may hold a partial bundle; run bundle again to rewrite it"
"""What an interrupt leaves: __main__ says it."""


def add_arguments(parser):
    parser.add_argument("--out", default="bundle", help="the folder to write")
    parser.add_argument("--data", default=None, help="IMDb source (default: $ATTNPAPER_IMDB or hub)")
    parser.add_argument("--max-length", type=int, default=128, help="token ids cut at this length (8 to 512)")
    parser.add_argument(
        "--wheels", default=".whl", help="folder of wheels the GPU machine lacks (counted in the size check)"
    )
    parser.add_argument(
        "--xz",
        action="store_true",
        help="also write bundle/xz: weights and token ids xz-compressed (fits 64 MiB with 512 tokens)",
    )


def run(args) -> int:
    from ..experiment.bundle import make_bundle

    make_bundle(args.out, args.data, args.max_length, args.wheels, xz=args.xz)
    return 0
