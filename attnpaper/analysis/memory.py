"""Peak GPU memory of the runs: where it goes, and whether it creeps from one run to the next."""

from __future__ import annotations

import pandas as pd


def memory_parts(records: pd.DataFrame, variants, seed=0) -> pd.DataFrame:
    """Peak MB of one seed per variant, split into weights, gradients, AdamW's state, and the rest
    (activations and temporaries).

    The gradients are the record's ``gradients_mb`` where it holds one. Where it does not (a missing or
    zero figure: older records measured it after the optimizer step had freed the gradients), they are
    counted as one fp32 buffer per weight, ``weights_mb``, since every weight is trained;
    ``gradients_from_weights`` names those runs.
    """
    runs = one_seed(records, variants, seed)
    from_weights = gradients_from_weights(runs)
    grads = runs.weights_mb if from_weights.all() else runs.weights_mb.where(from_weights, runs.gradients_mb)
    parts = pd.DataFrame({"weights": runs.weights_mb, "gradients": grads, "optimizer": runs.optimizer_mb})
    parts["activations and temporaries"] = runs.peak_memory_mb - parts.sum(axis=1)
    return parts


def one_seed(records: pd.DataFrame, variants, seed=0) -> pd.DataFrame:
    """The successful run of ``seed`` of each variant, indexed by variant in the order given."""
    runs = records[(records["seed"] == seed) & (records["status"] == "ok")].set_index("variant")
    missing = [v for v in variants if v not in runs.index]
    if missing:
        raise ValueError(f"no successful seed-{seed} run of {', '.join(missing)}; have: {', '.join(runs.index)}")
    return runs.reindex(variants)


def gradients_from_weights(runs: pd.DataFrame) -> pd.Series:
    """True for each run whose record holds no gradient figure (``gradients_mb`` missing or 0)."""
    grads = runs["gradients_mb"] if "gradients_mb" in runs else pd.Series(float("nan"), index=runs.index)
    return ~(pd.to_numeric(grads, errors="coerce") > 0)


def in_run_order(records: pd.DataFrame) -> pd.DataFrame:
    """The records sorted by start time, indexed 0, 1, ... in that order."""
    return records.sort_values("started").reset_index(drop=True)


def seed_spread(records: pd.DataFrame) -> pd.Series:
    """Per variant, max - min peak MB over its runs: near 0 when memory does not creep between runs."""
    return records.groupby("variant")["peak_memory_mb"].agg(lambda s: s.max() - s.min())
