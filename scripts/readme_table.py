"""Write the results table of results/h200 into README.md, between its two table markers.

The README cannot glue numbers as the book does; this puts the output of
``python -m attnpaper table results/h200 --format markdown`` there, and a fast test fails when the
README's copy differs from what the committed records give (run ``make readme`` after new records).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from attnpaper.analysis.results import load_records  # noqa: E402
from attnpaper.analysis.tables import format_table  # noqa: E402

START = "<!-- table: python -m attnpaper table results/h200 --format markdown -->"
END = "<!-- end of table -->"


def current() -> str:
    return format_table(load_records(ROOT / "results" / "h200"), "markdown")


def main() -> int:
    path = ROOT / "README.md"
    text = path.read_text()
    if text.count(START) != 1 or text.count(END) != 1:
        print(f"error: README.md needs one {START!r} line and one {END!r} line", file=sys.stderr)
        return 2
    head, rest = text.split(START)
    _, tail = rest.split(END)
    path.write_text(f"{head}{START}\n{current()}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
