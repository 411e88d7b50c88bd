"""What every chapter notebook does first and often: silence known notices, glue many values at once."""

from __future__ import annotations

import warnings

QUIET_MESSAGES = ("IProgress not found",)
"""Warnings a chapter never shows: tqdm's notice that ipywidgets is missing (it falls back to text)."""


def quiet() -> None:
    """Hide the known, harmless notices (QUIET_MESSAGES) from a notebook's output from here on.

    tqdm's notice comes once, when transformers first imports tqdm.auto; ``import attnpaper`` does
    that under this filter already, so the import that brings this function prints nothing either.
    """
    for message in QUIET_MESSAGES:
        warnings.filterwarnings("ignore", message=message)


def glue_all(values: dict) -> None:
    """Glue each name -> value for {glue:text}, without displaying it."""
    from myst_nb import glue

    for name, value in values.items():
        glue(name, value, display=False)
