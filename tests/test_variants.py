"""variants.TABLE is the one list of variants: a new row shows in the results table, the figures and the
answer box with nothing else edited (issue 36), and a record of a variant it does not know still shows."""

import argparse
import dataclasses
import io

import pandas as pd
import pytest
from helpers import make_record

from attnpaper import variants as V
from attnpaper.analysis import answer, box, plots, results
from attnpaper.analysis.tables import format_table
from attnpaper.cli import bench, paper_memory, scaling, sweep
from attnpaper.experiment.records import write_record

ACC = {"baseline": [0.850, 0.862, 0.847], "hybrid": [0.840, 0.851, 0.842], "toy": [0.860, 0.866, 0.851]}


@pytest.fixture
def toy(monkeypatch):
    """A toy variant registered the one way a real one is: a row of the table (flash's mechanism)."""
    row = dataclasses.replace(V.TABLE["flash"], name="toy", label="a toy attention", color="#123456", paper=None)
    monkeypatch.setitem(V.TABLE, "toy", row)
    return row


def toy_records(extra=()):
    recs = [
        make_record(v, s, a, peak_memory_mb=1000.0 + 100 * i) for i, v in enumerate(ACC) for s, a in enumerate(ACC[v])
    ]
    return recs + list(extra)


def test_the_table_gives_order_labels_colours_and_the_papers_order():
    assert V.VARIANTS == ("baseline", "sdpa", "flash", "linear", "hybrid")
    assert V.PAPER_ORDER == ("baseline", "flash", "linear", "hybrid")
    assert answer.PAPER_ORDER == V.PAPER_ORDER and list(results.PAPER.index) == list(V.PAPER_ORDER)
    assert list(plots.PALETTE) == list(V.VARIANTS) and plots.PALETTE["flash"] == V.TABLE["flash"].color
    assert len({row.color for row in V.TABLE.values()}) == len(V.TABLE)  # every variant told apart
    defaults = {}
    for cli, args in ((sweep, []), (paper_memory, []), (bench, []), (scaling, ["model"])):
        parser = argparse.ArgumentParser()
        cli.add_arguments(parser)
        defaults[cli.NAME] = parser.parse_args(args).variants
    assert defaults["sweep"] == defaults["paper-memory"] == list(V.PAPER_ORDER)  # the paper's runs
    assert defaults["bench"] == defaults["scaling"] == list(V.VARIANTS)
    assert V.in_order(["zeta", "hybrid", "alpha", "baseline", "hybrid"]) == ["baseline", "hybrid", "alpha", "zeta"]


def test_a_toy_variant_shows_in_the_results_table_after_the_known_ones(toy):
    """The toy gets its paired difference and ratios (not '-'); so does a variant the table does not know,
    placed after it."""
    mystery = [make_record("mystery", s, 0.80 + s / 100) for s in range(3)]
    records = pd.DataFrame(toy_records(mystery))
    csv = pd.read_csv(io.StringIO(format_table(records, "csv"))).set_index("variant")
    assert list(csv.index) == ["baseline", "hybrid", "toy", "mystery"]
    assert csv.loc["toy", "diff_pts"] == pytest.approx(100 * (sum(ACC["toy"]) - sum(ACC["baseline"])) / 3)
    assert csv.loc["toy", "memory_ratio"] == pytest.approx(1.2) and csv.loc["mystery", "n_pairs"] == 3
    text = format_table(records).splitlines()
    (row,) = [line for line in text if " toy " in line]
    assert "+0.60 [" in row and "1.20x [" in row


def test_a_toy_variant_has_its_colour_in_the_figures(toy):
    assert plots.color("toy") == "#123456" and plots.shades("toy", 3)[-1] == "#123456"
    assert plots.color("flash") == plots.PALETTE["flash"]  # the others unchanged
    with pytest.raises(KeyError):
        plots.color("mystery")


def test_a_toy_variant_shows_in_the_answer_box(toy, tmp_path):
    """Its records load (the table knows it), it gets a row of effects, and the box says what it is."""
    for rec in toy_records():
        write_record(rec, tmp_path / "records" / f"{rec['variant']}_seed{rec['seed']}_{rec['config_hash']}.json")
    ans = answer.load(tmp_path)
    assert list(ans["effects"].index) == ["hybrid", "toy"]
    html = box.render(ans)
    assert "toy: a toy attention" in html and "<tr><td>toy</td><td>+0.60" in html
