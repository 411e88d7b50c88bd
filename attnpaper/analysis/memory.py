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


PEAKS = ("allocated", "reserved")
"""The readings a case is judged on (bench.memory_cases.PEAKS: analysis sits below bench, so named here)."""
UNIT_NAMES = {"mb": "MB", "mib": "MiB"}
"""The units the cases' steps are in (bench.memory_cases.UNIT_NAMES): 10**6 and 2**20 bytes."""
REPORT = ("artefacts", "paper-memory.json")
"""Where a results folder keeps the paper-memory report (bench/artefacts.py), whose ``cases`` section
(bench/memory_cases.summarise) memory_cases reads."""


def memory_cases(report: dict, readings=None) -> dict | None:
    """The paper-memory report's cases (what each run leaves alive, and the step of the never-reset peak
    that follows), or None where the report has no ``cases`` section.

    ``table``: one row per (case, reading, unit), in the report's order: the case's label and what it
    keeps, the steps between consecutive runs, their mean, its offset from the paper's mean step (a
    fraction: -0.01 is 1% below), ``within`` (the mean within the report's tolerance) and ``even`` (every
    step within it); None where not measured (no GPU). ``readings``: the judged peaks (allocated,
    reserved) by default; held and kept too where named. Beside it the report's own ``matching_cases``,
    ``even_cases`` and ``verdict``, the paper's mean step (MB), the tolerance, and ``note`` (why no peak
    was read, or None)."""
    if "cases" not in report:
        return None
    rows = []
    for case, found in report["cases"].items():
        for reading in readings or PEAKS:
            steps = found["steps"].get(reading) or {}
            for unit, name in UNIT_NAMES.items():
                rows.append(
                    {
                        "case": case,
                        "reading": reading,
                        "unit": name,
                        "label": found.get("label"),
                        "keeps": found.get("keeps"),
                        "steps": steps.get(f"steps_{unit}"),
                        "mean": steps.get(f"mean_{unit}"),
                        "off_paper": steps.get(f"off_{unit}"),
                        "within": steps.get(f"matches_{unit}"),
                        "even": steps.get(f"even_{unit}"),
                    }
                )
    index = ["case", "reading", "unit"]
    table = pd.DataFrame(rows, columns=index + CASE_COLUMNS).set_index(index)
    return {
        "table": table,
        "matching_cases": report.get("matching_cases"),
        "even_cases": report.get("even_cases"),
        "verdict": report.get("verdict"),
        "paper_step_mb": (report.get("paper_step_mb") or {}).get("mean"),
        "tolerance": report.get("tolerance"),
        "note": report.get("cases_note"),
    }


CASE_COLUMNS = ["label", "keeps", "steps", "mean", "off_paper", "within", "even"]
"""memory_cases' table columns, after its index (case, reading, unit)."""


def load_memory_cases(root, readings=None) -> dict | None:
    """``memory_cases`` of ``root``'s paper-memory report; None where there is no report or no cases in it."""
    import json
    from pathlib import Path

    path = Path(root).joinpath(*REPORT)
    return memory_cases(json.loads(path.read_text()), readings) if path.is_file() else None
