"""Peak GPU memory of the runs: where it goes, and whether it creeps from one run to the next."""

from __future__ import annotations

import pandas as pd


def memory_parts(records: pd.DataFrame, variants, seed=0) -> pd.DataFrame:
    """Peak MB of one seed per variant, split into weights, gradients (one fp32 buffer per weight:
    every weight is trained), AdamW's state, and the rest (activations and temporaries)."""
    runs = records[(records["seed"] == seed) & (records["status"] == "ok")].set_index("variant")
    missing = [v for v in variants if v not in runs.index]
    if missing:
        raise ValueError(f"no successful seed-{seed} run of {', '.join(missing)}; have: {', '.join(runs.index)}")
    runs = runs.reindex(variants)
    parts = pd.DataFrame({"weights": runs.weights_mb, "gradients": runs.weights_mb, "optimizer": runs.optimizer_mb})
    parts["activations and temporaries"] = runs.peak_memory_mb - parts.sum(axis=1)
    return parts


def in_run_order(records: pd.DataFrame) -> pd.DataFrame:
    """The records sorted by start time, indexed 0, 1, ... in that order."""
    return records.sort_values("started").reset_index(drop=True)


def seed_spread(records: pd.DataFrame) -> pd.Series:
    """Per variant, max - min peak MB over its runs: near 0 when memory does not creep between runs."""
    return records.groupby("variant")["peak_memory_mb"].agg(lambda s: s.max() - s.min())
