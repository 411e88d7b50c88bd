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


READABLE = {
    "wall_ms": "wall time (ms)",
    "busy_ms": "GPU busy (ms)",
    "syncs": "host syncs per step",
    "peak_mb": "peak memory (MB)",
    "reserved_mb": "peak reserved (MB)",
    "padding": "padding share",
    "max_length": "max length (tokens)",
    "seq_len": "N (tokens)",
    "step_mode": "step",
    "n_pairs": "seed pairs",
    "diff_mean": "mean difference",
    "ci_low": "95% interval, low",
    "ci_high": "95% interval, high",
}
"""Field names of records and benchmark tables -> the names (with units) a rendered table shows."""


def readable(df, **names):
    """``df`` with READABLE's names (and ``names``, which win) for its columns and index levels."""
    names = READABLE | names
    out = df.rename(columns=names)
    return out.rename_axis(index=[names.get(n, n) for n in out.index.names])


def readable_number(x) -> str:
    """A float for a table: three significant digits, thousands separated, never in e+ notation
    ("2,720", "453", "0.0135", "2.62e-07"); pandas' ``display.float_format``."""
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)
    if x == 0:
        return "0"
    text = f"{x:.3g}"
    return f"{x:,.0f}" if "e+" in text else text


def refuse_unknown_parameters(namespace: dict, defaults: set, valid) -> None:
    """Refuse, in one line, a parameter that papermill injected but the parameters cell does not define.

    papermill only warns ("Passed unknown parameter") and runs with the defaults; a misspelt
    ``-p lr_rate 1e-4`` would silently train at the default lr. ``defaults``: the names the kernel held
    after the parameters cell (``set(globals())`` as its last line), so the injected cell's new names are
    the rest; names starting with "_" are IPython's.
    """
    unknown = sorted(k for k in set(namespace) - set(defaults) if not k.startswith("_") and k not in valid)
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
