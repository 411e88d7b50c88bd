"""Write the README's numbers from the published set (answer.PUBLISHED, results/h200): the verdict, the
results tables and the step-mode figures.

The README cannot glue numbers as the book does; this writes, between marker lines, the output of
``python -m attnpaper table results/h200 --format markdown`` (and of ``results/h200/len512``, the same
runs at 512 tokens) and a sentence of step-benchmark and compile figures, and a fast test fails when
the README's copy differs from what the committed files give (run ``make readme`` after new results).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from attnpaper.analysis import answer, verdict  # noqa: E402
from attnpaper.analysis.answer import LONG, bench_rows  # noqa: E402
from attnpaper.analysis.results import load_records  # noqa: E402
from attnpaper.analysis.steps import step_table  # noqa: E402
from attnpaper.analysis.tables import format_table  # noqa: E402

RESULTS = ROOT / answer.PUBLISHED
START = f"<!-- table: python -m attnpaper table {answer.PUBLISHED} --format markdown -->"
END = "<!-- end of table -->"
LONG_START = f"<!-- table: python -m attnpaper table {answer.PUBLISHED / LONG} --format markdown -->"
LONG_END = "<!-- end of 512-token table -->"
VERDICT_START = "<!-- verdict: attnpaper.analysis.verdict, as chapter 1 shows it -->"
VERDICT_END = "<!-- end of verdict -->"
STEP_START = "<!-- step figures: scripts/readme_table.py -->"
STEP_END = "<!-- end of step figures -->"


def current(folder=RESULTS) -> str:
    return format_table(load_records(folder), "markdown")


def step_figures() -> str:
    """The whole step's wall over busy time where busy is valid, the eager step's at 128 tokens, and
    the full runs' compile times, from results/h200 (one sentence each)."""
    rows = [r for r in bench_rows(RESULTS / "bench") if r["variant"] != "transformers"]
    by = ["model", "max_length", "variant", "step_mode"]
    ratio = step_table(rows, by, ("wall_over_busy",))["wall_over_busy"]  # per variant and mode
    whole = ratio.xs("whole", level="step_mode")
    eager = ratio.xs("eager", level="step_mode").xs(128, level="max_length")
    blank = sorted(f"{v} at {n}" for (_, n, v), x in whole.items() if x != x)
    shas = sorted({r["git_sha"][:7] for r in rows})
    recs = load_records(RESULTS)
    ok = recs[recs.status == "ok"]
    where = answer.PUBLISHED
    blank_text = f" ({', '.join(blank)}: no valid busy figure, see `{where}/CAMPAIGN.md`)" if blank else ""
    return (
        f"On the {answer.card_of(recs.device)} (batch 32, IMDb lengths, bf16, commit {', '.join(shas)}, "
        f"`{where}/bench/`) the "
        f"whole step's wall time was {whole.min():.2f}-{whole.max():.2f} x its GPU busy time, every variant "
        f"at every measured shape{blank_text}; an eager step at 128 tokens took {eager.min():.1f}-"
        f"{eager.max():.1f} x. In the {len(ok)} full runs of the paper's setup (MiniLM, 128 tokens, batch 32) "
        f"compile and graph recording took {ok.compile_time_s.min():.0f}-{ok.compile_time_s.max():.0f} s a "
        f"run, the longer ones in a variant's first run on a machine (the compiler's cache is cold)."
    )


def verdict_text(folder=RESULTS) -> str:
    """The book's verdict (chapter 1's first paragraph), checked against the records as the book checks it."""
    return verdict.markdown(answer.load(folder))


def between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def main() -> int:
    path = ROOT / "README.md"
    text = path.read_text()
    blocks = (
        (VERDICT_START, VERDICT_END, verdict_text()),
        (START, END, current()),
        (LONG_START, LONG_END, current(RESULTS / LONG)),
        (STEP_START, STEP_END, step_figures()),
    )
    for start, end, body in blocks:
        if text.count(start) != 1 or text.count(end) != 1:
            print(f"error: README.md needs one {start!r} line and one {end!r} line", file=sys.stderr)
            return 2
        head, rest = text.split(start)
        _, tail = rest.split(end)
        text = f"{head}{start}\n{body}\n{end}{tail}"
    path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
