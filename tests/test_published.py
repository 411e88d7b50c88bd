"""The published set is one folder, named once (answer.PUBLISHED): the book, the README and the tests read it
through that name, so a set regenerated on another card replaces it by one edit (issue 39)."""

import json
import re
from pathlib import Path

import pytest

from attnpaper.analysis.answer import PUBLISHED, card_of, published

ROOT = Path(__file__).resolve().parent.parent
# a path to a results folder built in code: "results" / "h200", Path("results/h100"), bench_rows("results/h200/...")
BUILT = re.compile(r"""["']results["']\s*/\s*["']h\d{3}["']|\(\s*["']results/h\d{3}""")


def code_lines():
    """(where, line) for every line of Python the book, the README's script and the tests run."""
    files = [*ROOT.glob("attnpaper/**/*.py"), *ROOT.glob("scripts/*.py"), *ROOT.glob("tests/*.py")]
    for path in files:
        if path.name == Path(__file__).name:  # this file spells the pattern out
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            yield f"{path.relative_to(ROOT)}:{i}", line
    for path in ROOT.glob("chapters/*.ipynb"):
        for n, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "code":
                source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
                for line in source.splitlines():
                    yield f"{path.relative_to(ROOT)} cell {n}", line


def test_no_code_builds_the_published_folders_path_itself():
    built = [f"{where}: {line.strip()}" for where, line in code_lines() if BUILT.search(line.split("#")[0])]
    assert built == [], "read the published set through attnpaper.analysis.answer.PUBLISHED:\n" + "\n".join(built)
    assert BUILT.search('RUNS = ROOT / "results" / "h200"') and BUILT.search('bench_rows("results/h100/bench")')


def test_the_published_set_is_one_card_kind():
    assert published() == ROOT / PUBLISHED and (ROOT / PUBLISHED / "records").is_dir()
    devices = {json.loads(p.read_text())["device"] for p in (ROOT / PUBLISHED).rglob("records/*.json")}
    assert PUBLISHED.name == card_of(devices).lower()  # the folder is named for its card


@pytest.mark.parametrize(
    "devices, card",
    [
        (["NVIDIA H200"], "H200"),
        (["NVIDIA H100 80GB HBM3"] * 3, "H100"),
        (["NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe"], "H100"),
    ],
)
def test_card_of_names_the_one_card(devices, card):
    assert card_of(devices) == card


@pytest.mark.parametrize("devices", [["NVIDIA H200", "NVIDIA H100 80GB HBM3"], ["cpu"], []])
def test_card_of_refuses_several_cards_or_none(devices):
    with pytest.raises(ValueError, match="one card expected"):
        card_of(devices)
