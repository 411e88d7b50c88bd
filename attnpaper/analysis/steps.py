"""Training-step benchmarks read back: per (length, variant, step mode) medians, memory and ratios to a reference."""

from __future__ import annotations

import numpy as np
import pandas as pd

AGG = {
    "wall_ms": ("step_time_ms_median", "median"),
    "busy_ms": ("gpu_busy_ms_per_step", "median"),
    "syncs": ("host_syncs_per_step", "max"),
    "peak_mb": ("peak_memory_mb", "max"),
    "reserved_mb": ("peak_reserved_mb", "max"),
    "padding": ("padding_fraction", "mean"),
}
"""Column of step_table -> (field of a benchmark row, how repeats combine)."""

RATIOS = {"wall_ms": "wall", "busy_ms": "busy", "peak_mb": "mem"}
"""Columns compared with the reference variant, and the stem of their ratio column ``<stem>_vs_<ref>``."""


def busy_unreliable(row) -> bool:
    """Whether a benchmark row's GPU busy time is undercounted by the profiler fault fixed after f1312bb.

    Until then the busy time left out every kernel whose name a CPU event also had, and Inductor names
    a CPU event after each Triton kernel it launches from Python: a compiled step's warm-up or
    recording inside the profiled window hid those kernels in every profiled step. A row is suspect
    when it ran compiled, predates the fix (no ``profiled_warming_steps``) and profiled a shape that
    had no steady step before the window (so that shape's call there may have warmed up or recorded).
    """
    if row.get("step_mode") == "eager" or "profiled_warming_steps" in row or not row.get("profiled_shapes"):
        return False
    steady = row.get("step_time_ms_by_shape") or {}
    return any(shape not in steady for shape in row["profiled_shapes"])


def step_table(rows, by, columns=("wall_ms", "busy_ms", "peak_mb"), ref=None) -> pd.DataFrame:
    """One row per group of ``by`` (e.g. max_length, variant, step_mode) with the ``columns`` asked for.

    Columns are AGG's names, or ``wall_over_busy`` (wall / GPU busy time). A busy time of 0 (a CPU,
    no GPU kernels) or one the profiler undercounted (``busy_unreliable``) is blank, not a figure.
    With ``ref`` (a variant), ``wall_vs_<ref>``, ``busy_vs_<ref>`` and ``mem_vs_<ref>`` divide by the
    reference variant of the same other keys.
    """
    rows = list(rows)
    df = pd.DataFrame(rows)
    unknown = [c for c in columns if c not in AGG and c != "wall_over_busy"]
    if unknown:
        raise ValueError(f"unknown step_table columns {unknown}; valid: {', '.join(AGG)}, wall_over_busy")
    if "variant" not in by and ref is not None:
        raise ValueError("a reference variant needs 'variant' among the keys (by)")
    if "gpu_busy_ms_per_step" in df:  # none on a CPU (0), none where the profiler undercounted it
        suspect = [busy_unreliable(r) for r in rows]
        df["gpu_busy_ms_per_step"] = df["gpu_busy_ms_per_step"].replace(0.0, np.nan).mask(suspect)
    need = [c for c in columns if c in AGG] + (["wall_ms", "busy_ms"] if "wall_over_busy" in columns else [])
    need += [c for c in RATIOS if ref is not None and c not in need]
    g = df.groupby(list(by)).agg(**{c: AGG[c] for c in dict.fromkeys(need)})
    if "wall_over_busy" in columns:
        g["wall_over_busy"] = g["wall_ms"] / g["busy_ms"]
    out = g[list(columns)].copy()
    if ref is not None:
        if ref not in g.index.get_level_values("variant"):
            raise ValueError(
                f"reference variant {ref!r} not measured; measured: "
                f"{', '.join(sorted(set(g.index.get_level_values('variant'))))}"
            )
        for col, stem in RATIOS.items():
            if len(by) > 1:  # the reference row of the same other keys
                ref_values = g[col].xs(ref, level="variant").reindex(g.index.droplevel("variant")).values
            else:
                ref_values = g.loc[ref, col]
            out[f"{stem}_vs_{ref}"] = g[col].values / ref_values
    return out
