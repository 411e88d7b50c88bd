"""After `jupyter-book build .`: the HTML exists, every chapter is there, and the results page holds the table."""

from pathlib import Path

import pytest

HTML = Path(__file__).resolve().parent.parent / "_build" / "html"


@pytest.fixture(scope="module")
def results_page():
    page = HTML / "chapters" / "08_results.html"
    if not page.exists():
        pytest.fail(f"{page} is missing: run `make book` first")
    return page.read_text()


def test_every_chapter_built():
    names = [
        "01_introduction",
        "02_attention_cost",
        "03_baseline",
        "04_flash",
        "05_linear",
        "06_hybrid",
        "07_experiment",
        "08_results",
        "09_where_attention_matters",
        "10_discussion",
        "reproduce",
    ]
    missing = [n for n in names if not (HTML / "chapters" / f"{n}.html").exists()]
    assert not missing, missing


def test_results_page_holds_the_table(results_page):
    for text in ("paper acc", "peak MB", "baseline", "flash", "linear", "hybrid", "NVIDIA H200"):
        assert text in results_page, text
    assert "<table" in results_page and "<img" in results_page


def test_glued_numbers_rendered(results_page):
    """A glue key that failed to resolve leaves its raw role in the page."""
    assert "{glue:text}" not in results_page and "glue:text" not in results_page


def test_code_lines_fit():
    """Every code line in a chapter notebook is at most 88 characters (longer ones are clipped on the page)."""
    import json

    long = []
    for nb in sorted((HTML.parent.parent / "chapters").glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] == "code":
                long += [f"{nb.name}: {line}" for line in "".join(cell["source"]).splitlines() if len(line) > 88]
    assert not long, "\n".join(long)


def test_every_figure_has_words_for_alt_text():
    """A figure's alt text says what it shows, not the hashed name of its image file."""
    import re

    bare = []
    for page in sorted((HTML / "chapters").glob("*.html")):
        for alt in re.findall(r'<img [^>]*alt="([^"]*)"', page.read_text()):
            if not alt.strip() or re.search(r"\.(svg|png|jpe?g)$", alt):
                bare.append(f"{page.name}: {alt!r}")
    assert not bare, bare


def test_the_verdict_opens_chapter_one_and_the_discussion_ends_with_it():
    """Chapter 1 opens with the verdict, before the box and before any section; the discussion shows it too."""
    intro = (HTML / "chapters" / "01_introduction.html").read_text()
    first = intro.index("Verdict.")
    assert first < intro.index("answer-box") < intro.index('id="the-question"')
    assert "<IPython.core.display" not in intro and "Verdict." in (HTML / "chapters" / "10_discussion.html").read_text()
