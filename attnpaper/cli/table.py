"""`python -m attnpaper table DIR...`: summarise records into the results table."""

from __future__ import annotations

NAME = "table"
HELP = "summarise records into the results table"


def add_arguments(parser):
    parser.add_argument("dirs", nargs="+", help="folders holding records/*.json")
    parser.add_argument(
        "--format",
        default="text",
        choices=("text", "markdown", "latex", "csv"),
        help="text for the terminal; markdown, latex (booktabs) or csv to paste",
    )


def run(args) -> int:
    from ..analysis.results import load_records
    from ..analysis.tables import format_table

    print(format_table(load_records(*args.dirs), args.format))
    return 0
