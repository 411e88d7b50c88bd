"""Sphinx extension: a page that pastes glued outputs from another notebook is rebuilt with it.

myst-nb resolves ``{glue}`` pastes with ``:doc:`` and ``nb.ipynb::key`` roles from the other
notebook's stored outputs, but Sphinx does not record that dependency: after chapter 8 is executed
again, chapter 1 and the discussion would keep the answer box of the previous build. Sphinx's
``env-get-outdated`` event marks them for re-reading whenever a notebook they paste from is.
"""

from __future__ import annotations

import re
from pathlib import Path

PASTE = re.compile(r"([\w./-]+\.ipynb)::|:doc:\s*([\w./-]+\.ipynb)")
"""A cross-document glue role (``08_results.ipynb::key``) or a paste directive's ``:doc:`` option."""


def pasted_from(env, docname: str) -> set[str]:
    """The docnames whose glued outputs ``docname``'s source pastes."""
    text = Path(env.doc2path(docname)).read_text(errors="ignore")
    base = Path(docname).parent
    return {(base / (a or b)).with_suffix("").as_posix() for a, b in PASTE.findall(text)}


def outdated(app, env, added, changed, removed):
    fresh = set(added) | set(changed)
    if not fresh:
        return []
    return sorted(d for d in env.found_docs if d not in fresh and pasted_from(env, d) & fresh)


def setup(app):
    app.connect("env-get-outdated", outdated)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
