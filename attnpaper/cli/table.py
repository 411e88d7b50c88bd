"""`python -m attnpaper table DIR...`: summarise records into the results table."""

from __future__ import annotations

import sys

NAME = "table"
HELP = (
    "summarise records into the results table (with the Trainer reference's row last where a DIR has a "
    "trainer/ folder of its records); warns on stderr where a row pools runs from several commits or step "
    "modes; exit status 1 when every run failed (the table then lists the failures)"
)
ON_INTERRUPT = "nothing was written"
"""What an interrupt leaves: __main__ says it."""


def add_arguments(parser):
    parser.add_argument(
        "dirs", nargs="+", help="folders holding records/*.json (and trainer/*.json: the Trainer reference's)"
    )
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
    from ..analysis.trainer import load_trainer, trainer_folder

    records = load_records(*args.dirs)
    trainers = [f for f in map(trainer_folder, args.dirs) if f is not None]
    print(format_table(records, args.format, load_trainer(*trainers) if trainers else None))
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
