"""From records to the results table: per-variant means, seed spread, paired differences to baseline."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..experiment.records import read_record
from ..variants import PAPER_ORDER, TABLE, in_order

PAPER = pd.DataFrame(
    {
        "accuracy": [0.852, 0.840, 0.838, 0.841],
        "train_time_s": [204.9, 206.6, 206.5, 206.6],
        "peak_memory_mb": [1424, 1945, 2469, 2993],
    },
    index=pd.Index(PAPER_ORDER, name="variant"),
)
"""The paper's table (DistilBERT-base-uncased, Colab T4), as printed there (its rows: variants.PAPER_ORDER)."""

GROUP = ["config_hash", "device", "model", "max_length"]


STATUSES = ("ok", "failed")
NUMBERS = {
    "accuracy": (0.0, 1.0),
    "train_time_s": (0.0, math.inf),
    "end_to_end_s": (0.0, math.inf),
    "tokens_per_s": (0.0, math.inf),
    "peak_memory_mb": (0.0, math.inf),
}
"""Measured fields: None (not measured) or a finite number in this closed range."""


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def record_problem(rec: dict, variants=TABLE) -> str | None:
    """What makes a record unfit for the table (wrong type, NaN, out of range, unknown name), or None.
    ``variants``: the names a record may have (attnpaper's variants; the Trainer reader passes its own)."""
    if rec["variant"] not in variants:
        return f"unknown variant {rec['variant']!r} (valid: {', '.join(variants)})"
    if rec["status"] not in STATUSES:
        return f"unknown status {rec['status']!r} (valid: {', '.join(STATUSES)})"
    if isinstance(rec["seed"], bool) or not isinstance(rec["seed"], int) or rec["seed"] < 0:
        return f"seed {rec['seed']!r} is not an int >= 0"
    for key in ("device", "model", "config_hash"):
        if not isinstance(rec[key], str) or not rec[key]:
            return f"{key} {rec[key]!r} is not a non-empty string"
    if isinstance(rec["max_length"], bool) or not isinstance(rec["max_length"], int) or rec["max_length"] < 1:
        return f"max_length {rec['max_length']!r} is not an int >= 1"
    for key, (low, high) in NUMBERS.items():
        x = rec.get(key)
        if x is None:
            continue
        if not _number(x):
            return f"{key} {x!r} is not a number"
        if not math.isfinite(x) or not low <= x <= high:
            return f"{key} {x!r} is not a finite number in [{low:g}, {high:g}]"
    steps = rec.get("steps")
    if rec["status"] == "ok" and steps is not None and (not _number(steps) or steps < 2):
        return f"an ok record of {steps!r} training step(s) is not a result (more epochs or train_samples)"
    return None


def load_records(*dirs, warn=None, variants=TABLE) -> pd.DataFrame:
    """Every record (records/*.json, or *.json) under the given folders, one row each.

    Hidden files (temporary writes) are not records. A damaged record, or one with a wrong type, a
    NaN, a value out of range or an unknown variant or status, is reported in one line naming its
    path and what is wrong (``warn``, default stderr) and left out; the sweep reruns damaged ones.
    A folder given twice (or a file reached twice) is read once. ``variants``: the variant names accepted
    (attnpaper's by default, so the Trainer's records, analysis.trainer's, never pool with the runs).
    """
    import sys

    from ..experiment.records import is_record_path

    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    paths, seen = [], set()
    for d in dirs:
        d = Path(d)
        found = (d / "records").glob("*.json") if (d / "records").is_dir() else d.glob("*.json")
        for p in sorted(p for p in found if is_record_path(p)):
            if p.resolve() not in seen:
                seen.add(p.resolve())
                paths.append(p)
    if not paths:
        raise ValueError(f"no records (*.json) under {', '.join(map(str, dirs))}")
    rows = []
    for p in paths:
        try:
            rec = read_record(p)
        except (ValueError, OSError) as err:
            warn(f"skipped: {err}")
            continue
        problem = record_problem(rec, variants)
        if problem:
            warn(f"skipped: record {p}: {problem}")
            continue
        rows.append(rec | {"path": str(p)})
    if not rows:
        raise ValueError(f"no readable records under {', '.join(map(str, dirs))}")
    df = pd.DataFrame(rows)
    for key in NUMBERS:  # None or numbers by now: one float column each (None becomes NaN)
        df[key] = pd.to_numeric(df[key]) if key in df else float("nan")
    dup = df[df.duplicated(GROUP + ["variant", "seed"], keep=False)]
    if len(dup):
        raise ValueError(f"the same (configuration, variant, seed) recorded twice: {sorted(dup['path'])}")
    unevaluated = df[(df["status"] == "ok") & df["accuracy"].isna()]
    if len(unevaluated):
        warn(
            f"note: {len(unevaluated)} ok record(s) without accuracy (run with eval=False): shown as "
            f"'not evaluated' and left out of accuracy means and paired differences"
        )
    return df


def t_quantile(df: int) -> float:
    """Two-sided 95% Student t quantile."""
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


def t_half_width(d: pd.Series) -> float:
    """Half the width of the 95% t interval of the mean of ``d`` (nan for fewer than two values)."""
    n = len(d)
    return t_quantile(n - 1) * d.std(ddof=1) / math.sqrt(n) if n > 1 else float("nan")


def paired_points(a: pd.Series, b: pd.Series) -> dict:
    """Mean of a - b over the seeds both have, in points, with a 95% t interval (nan for one pair)."""
    d = 100 * (a - b).dropna()
    half = t_half_width(d)
    return {"pts": float(d.mean()), "low": float(d.mean() - half), "high": float(d.mean() + half), "pairs": len(d)}


def timed(records: pd.DataFrame) -> pd.Series:
    """True for runs that had the GPU to themselves: only their wall times are comparable. A boolean Series
    even for no records (an empty object one would select columns, not rows: issue 37)."""
    notes = records["notes"] if "notes" in records else pd.Series([{}] * len(records), index=records.index)
    solo = notes.map(lambda n: not (isinstance(n, dict) and (n.get("concurrent_runs") or 1) > 1)).astype(bool)
    if "resumed_from_step" in records:  # a resumed run compiled twice and lost the work after its checkpoint
        solo &= records["resumed_from_step"].fillna(0).eq(0)
    return solo


def summarise(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (configuration, device, variant): n seeds, accuracy mean/std, time, memory; failed runs counted.

    n_eval counts the ok runs with an accuracy (eval=False runs have none; their mean is NaN).
    Times average only the runs that had the GPU to themselves (n_timed); memory is per process
    and so comes from every run.
    """
    rows = []
    records = records.assign(_timed=timed(records))
    for key, g in records.groupby(GROUP + ["variant"], sort=False, dropna=False):
        ok = g[g["status"] == "ok"]
        solo = ok[ok["_timed"]]
        row = dict(zip(GROUP + ["variant"], key))
        row.update(
            n=len(ok),
            failed=int((g["status"] != "ok").sum()),
            n_eval=int(ok["accuracy"].notna().sum()),
            acc_mean=ok["accuracy"].mean(),
            acc_std=ok["accuracy"].std(ddof=1),
            n_timed=len(solo),
            train_time_s=solo["train_time_s"].mean(),
            train_time_excl_compile_s=_mean(solo, "train_time_excl_compile_s"),
            end_to_end_s=_mean(solo, "end_to_end_s"),  # records from before issue 38 have none
            tokens_per_s=solo["tokens_per_s"].mean(),
            peak_memory_mb=ok["peak_memory_mb"].mean(),
        )
        rows.append(row)
    out = pd.DataFrame(rows)
    out["_o"] = out["variant"].map({v: i for i, v in enumerate(in_order(out["variant"]))})
    return out.sort_values(GROUP + ["_o"]).drop(columns="_o").reset_index(drop=True)


def _mean(records: pd.DataFrame, field: str) -> float:
    """The mean of a field that older records lack (NaN where none holds it)."""
    return pd.to_numeric(records[field], errors="coerce").mean() if field in records else float("nan")


def one_group(records: pd.DataFrame) -> None:
    """Refuse records from more than one configuration/device: a paired comparison needs both arms run
    under the same conditions."""
    groups = records[GROUP].drop_duplicates()
    if len(groups) != 1:
        raise ValueError(
            f"records from {len(groups)} configurations/devices; pair within one (group by {', '.join(GROUP)} first)"
        )


def paired_vs_baseline(records: pd.DataFrame, metric="accuracy", baseline="baseline") -> pd.DataFrame:
    """Per variant: mean over shared seeds of (variant - baseline) with a 95% t interval.

    Refuses records from more than one configuration/device: a paired difference needs both
    arms run under the same conditions.
    """
    one_group(records)
    ok = records[records["status"] == "ok"].pivot(index="seed", columns="variant", values=metric)
    if baseline not in ok:
        raise ValueError(f"no successful {baseline!r} runs to pair with")
    rows = []
    for v in [c for c in in_order(ok.columns) if c != baseline]:
        d = (ok[v] - ok[baseline]).dropna()
        half = t_half_width(d)
        rows.append(
            {
                "variant": v,
                "n_pairs": len(d),
                "diff_mean": d.mean(),
                "ci_low": d.mean() - half,
                "ci_high": d.mean() + half,
            }
        )
    return pd.DataFrame(rows)


PAIRED = "paired"
"""The configuration hash ``paired_frame`` gives both sides of a pairing across configurations."""


def paired_frame(reference: pd.DataFrame, runs: pd.DataFrame, baseline="baseline") -> pd.DataFrame:
    """``reference``'s records standing as the baseline (their variant renamed ``baseline``) beside ``runs``,
    as one configuration (config_hash PAIRED), so that paired_vs_baseline, paired_ratio_vs_baseline and
    what calls them pair the two by seed, as they pair a variant with the baseline: an arm's runs of a
    variant against the main runs of that variant, or the Trainer's runs against the baseline's.

    Refused unless both sides ran on one device, model and length (a pairing across them would measure
    more than the change), and when ``runs`` has a variant named ``baseline`` (it would pool with them)."""
    where = ["device", "model", "max_length"]
    found = pd.concat([reference[where], runs[where]]).drop_duplicates()
    if len(found) != 1:
        shown = "; ".join(", ".join(str(x) for x in row) for row in found.itertuples(index=False))
        raise ValueError(f"pairs within one device, model and length; these records hold {len(found)}: {shown}")
    if baseline in set(runs["variant"]):
        raise ValueError(f"the runs to pair hold a variant named {baseline!r}: it would pool with the reference")
    both = pd.concat([reference.assign(variant=baseline), runs], ignore_index=True)
    return both.assign(config_hash=PAIRED)


RATIO_METRICS = {
    "train_time_excl_compile_s": "training time excluding compile",
    "train_time_s": "training time including compile and graph recording",
    "end_to_end_s": "wall time end to end: launch, imports, data, model, training, evaluation",
    "peak_memory_mb": "peak memory",
}
"""What the table states as paired ratios to the baseline: times and memory scale, so ratios pool across seeds."""


def paired_ratio_vs_baseline(records: pd.DataFrame, metric: str, baseline="baseline") -> pd.DataFrame:
    """Per variant: geometric mean over shared seeds of variant / baseline, with a 95% t interval.

    The interval is taken on log ratios (a ratio's spread is symmetric on that scale) and mapped
    back. Times pair only runs that had the GPU to themselves (``timed``); memory pairs every ok
    run. One configuration/device only, as ``paired_vs_baseline``.
    """
    if metric not in RATIO_METRICS:
        raise ValueError(f"unknown ratio metric {metric!r}; valid: {', '.join(RATIO_METRICS)}")
    one_group(records)
    ok = records[records["status"] == "ok"]
    if metric != "peak_memory_mb":
        ok = ok[timed(ok)]
    values = pd.to_numeric(ok[metric], errors="coerce") if metric in ok else pd.Series(dtype=float)
    ok = ok.assign(_v=values).dropna(subset=["_v"])
    ok = ok[ok["_v"] > 0].pivot(index="seed", columns="variant", values="_v")
    if baseline not in ok:
        raise ValueError(f"no successful {baseline!r} runs with {metric} to pair with")
    rows = []
    for v in [c for c in in_order(ok.columns) if c != baseline]:
        d = (ok[v] / ok[baseline]).dropna().map(math.log)
        n = len(d)
        if n == 0:
            continue
        half = t_half_width(d)
        m = d.mean()
        rows.append(
            {
                "variant": v,
                "n_pairs": n,
                "ratio": math.exp(m),
                "ci_low": math.exp(m - half),
                "ci_high": math.exp(m + half),
            }
        )
    return pd.DataFrame(rows)


def ratios_by_variant(records: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``paired_ratio_vs_baseline`` indexed by variant; empty (same columns) where nothing pairs: no
    baseline, no runs with ``metric`` (records from before it existed), no other variant."""
    try:
        out = paired_ratio_vs_baseline(records, metric)
    except ValueError:
        out = pd.DataFrame()
    columns = ["n_pairs", "ratio", "ci_low", "ci_high"]
    return out.set_index("variant") if len(out) else pd.DataFrame(columns=columns, index=pd.Index([], name="variant"))


TIME_HEADERS = {"train_time_s": "train s (n)", "train_time_excl_compile_s": "train s excl. compile (n)"}
"""The time columns results_table can show, and their headers."""


def results_table(summary: pd.DataFrame, paper: pd.DataFrame = PAPER, time="train_time_s") -> pd.DataFrame:
    """The chapter's table: seeds, failures, accuracy ± sd ('failed (n)' where every run failed), timed train
    seconds (n timed), peak MB, and the paper's columns beside them ('-' where the paper has no such variant).

    ``summary`` is :func:`summarise` of one configuration, indexed by variant; ``time`` one of
    TIME_HEADERS (a compiled step's runs: without compile, which depends on the compiler's cache).
    """
    if time not in TIME_HEADERS:
        raise ValueError(f"time column {time!r}: valid are {', '.join(TIME_HEADERS)}")

    def paper_col(col, fmt):
        return [fmt.format(paper.loc[v, col]) if v in paper.index else "-" for v in summary.index]

    return pd.DataFrame(
        {
            "seeds": summary["n"].astype(int),
            "failed": summary["failed"].astype(int),
            "accuracy": [
                f"failed ({f})" if n == 0 else f"{m:.4f} ± {s:.4f}" if n > 1 else f"{m:.4f}"
                for m, s, n, f in zip(summary.acc_mean, summary.acc_std, summary.n, summary.failed)
            ],
            TIME_HEADERS[time]: ["-" if n == 0 else f"{t:.1f} ({n})" for t, n in zip(summary[time], summary.n_timed)],
            "peak MB": summary.peak_memory_mb.round(0).astype("Int64"),  # <NA> where every run failed
            "paper acc": paper_col("accuracy", "{:.3f}"),
            "paper train s": paper_col("train_time_s", "{:.1f}"),
            "paper max MB": paper_col("peak_memory_mb", "{:.0f}"),
        },
        index=summary.index,
    )


def paper_loss_points(paper: pd.DataFrame = PAPER, baseline="baseline") -> pd.Series:
    """Per variant, the paper's accuracy loss against its baseline, in points (positive = worse)."""
    return 100 * (paper.loc[baseline, "accuracy"] - paper["accuracy"])


def accuracy_gain(short: pd.DataFrame, long: pd.DataFrame, variants, lengths=(128, 512)) -> pd.DataFrame:
    """Accuracy at two lengths per variant: seeds and mean at each, and the gain in points over the
    seeds run at both, with its 95% t interval (NaN where a length has no run of the variant)."""
    n_short, n_long = lengths
    acc = [r[r["status"] == "ok"].pivot(index="seed", columns="variant", values="accuracy") for r in (short, long)]
    gain = f"{n_long} - {n_short}, points (same seeds)"
    rows = {}
    for v in variants:
        a, b = (x[v].dropna() if v in x else pd.Series(dtype=float) for x in acc)
        d = paired_points(b, a)
        rows[v] = {
            f"seeds at {n_short}": len(a),
            f"accuracy at {n_short}": a.mean(),
            f"seeds at {n_long}": len(b),
            f"accuracy at {n_long}": b.mean() if len(b) else math.nan,
            gain: d["pts"],
            f"{gain}, 95% CI low": d["low"],
            f"{gain}, 95% CI high": d["high"],
        }
    return pd.DataFrame.from_dict(rows, orient="index")
