"""`python -m attnpaper table DIR...`: summarise records into the results table."""

from __future__ import annotations

import sys

NAME = "table"
HELP = (
    "summarise records into the results table; warns on stderr where a row pools runs from several commits "
    "or step modes; exit status 1 when every run failed (the table then lists the failures)"
)
ON_INTERRUPT = "nothing was written"
"""What an interrupt leaves: __main__ says it."""


def add_arguments(parser):
    parser.add_argument("dirs", nargs="+", help="folders holding records/*.json")
    parser.add_argument(
        "--format",
        default="text",
        choices=("text", "markdown", "latex", "csv"),
        help="text for the terminal; markdown, latex (booktabs) or csv to paste (csv: each failure's first line)",
    )


def run(args) -> int:
    from ..analysis.groups import pooling_warnings
    from ..analysis.results import load_records
    from ..analysis.tables import format_table

    records = load_records(*args.dirs)
    print(format_table(records, args.format))
    for line in pooling_warnings(records):
        print(line, file=sys.stderr)
    if (records["status"] == "ok").any():
        return 0
    print(
        f"error: every run under {', '.join(args.dirs)} failed ({len(records)} records): no results, only the "
        f"failures above (--format csv gives each error's first line)",
        file=sys.stderr,
    )
    return 1
