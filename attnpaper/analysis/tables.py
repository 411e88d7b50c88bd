"""The results table as a reader pastes it: rounded, with n and paired 95% intervals, in several formats."""

from __future__ import annotations

import pandas as pd

from .groups import ROW, provenance
from .results import GROUP, RATIO_METRICS, paired_frame, paired_vs_baseline, ratios_by_variant, summarise

FORMATS = ("text", "markdown", "latex", "csv")


def paper_table(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (configuration, variant): n, accuracy mean and sd, the paired difference to baseline
    with its 95% t interval (accuracy points, four decimals: the display rounds them, ``points``), time
    and memory, rounded for print; then where each row comes from (``groups.provenance``: the settings
    that set its configuration apart, its commits and step modes, its failed runs' first error lines)."""
    rows = []
    where = provenance(records)
    for _, recs in records.groupby(GROUP, dropna=False):  # one configuration and device at a time
        group = summarise(recs)
        try:
            paired = paired_vs_baseline(recs)
        except ValueError:  # no baseline in this configuration: no paired column
            paired = pd.DataFrame()
        paired = paired.set_index("variant") if len(paired) else pd.DataFrame(index=pd.Index([], name="variant"))
        ratios = {m: ratios_by_variant(recs, m) for m in RATIO_METRICS}
        for _, r in group.iterrows():
            p = paired.loc[r["variant"]] if r["variant"] in paired.index else None
            rows.append(
                {
                    "model": r["model"],
                    "max_length": int(r["max_length"]),
                    "device": r["device"],
                    "variant": r["variant"],
                    "n": int(r["n"]),
                    "failed": int(r["failed"]),
                    "n_eval": int(r["n_eval"]),
                    "accuracy": _round(r["acc_mean"], 4),
                    "sd": _round(r["acc_std"], 4),
                    # differences and ratios unrounded: the text format rounds once (a value rounded
                    # here and again there can print one digit off, 0.8748 -> 0.875 -> 0.88)
                    "diff_pts": None if p is None else float(100 * p["diff_mean"]),
                    "ci95_low": None if p is None else float(100 * p["ci_low"]),
                    "ci95_high": None if p is None else float(100 * p["ci_high"]),
                    "n_pairs": None if p is None else int(p["n_pairs"]),
                    "train_time_s": _round(r["train_time_s"], 1),
                    "n_timed": int(r["n_timed"]),
                    "train_time_excl_compile_s": _round(r["train_time_excl_compile_s"], 2),
                    "end_to_end_s": _round(r["end_to_end_s"], 1),
                    "peak_memory_mb": _round(r["peak_memory_mb"], 0),
                    **{
                        f"{short}_{k}": _ratio_field(ratios[m], r["variant"], k)
                        for m, short in RATIO_SHORT.items()
                        for k in ("ratio", "ci_low", "ci_high", "n_pairs")
                    },
                    "config_hash": r["config_hash"],
                    **where.loc[tuple(r[k] for k in ROW)].to_dict(),
                }
            )
    return pd.DataFrame(rows)


TRAINER_SETTING = "transformers.Trainer (no attnpaper model code)"
"""The setting column's words for the Trainer's row (issue 39's reference)."""


def trainer_rows(records: pd.DataFrame, trainer: pd.DataFrame) -> pd.DataFrame:
    """The Trainer's rows (analysis.trainer.load_trainer's records) in ``paper_table``'s columns: each
    configuration of them paired by seed with the baseline of the one configuration of ``records`` on its
    device, model and length (results.paired_frame), its vs-baseline columns empty where there is none
    such, or several (which to pair with would be a guess)."""
    rows = []
    where = ["device", "model", "max_length"]
    base = records[records["variant"] == "baseline"]
    for key, recs in trainer.groupby(GROUP, dropna=False):
        same = base[(base[where] == pd.Series(dict(zip(GROUP, key)))[where]).all(axis=1)]
        pair = same if same["config_hash"].nunique() == 1 else None
        table = paper_table(recs if pair is None else paired_frame(pair, recs))
        table = table[table["variant"] != "baseline"].assign(config_hash=key[0], setting=TRAINER_SETTING)
        rows.append(table)
    return pd.concat(rows, ignore_index=True)


RATIO_SHORT = {
    "train_time_excl_compile_s": "time",
    "train_time_s": "time_compile",
    "end_to_end_s": "end_to_end",
    "peak_memory_mb": "memory",
}
"""csv column prefixes of the paired ratios: training time without and with compile, end to end, peak memory."""


def model_label(model: str) -> str:
    """A model as a reader knows it: the folder's name, not its path, and the offline stand-in named so."""
    name = str(model).rstrip("/").rsplit("/", 1)[-1]
    if "MiniLM" in name:
        return "all-MiniLM-L6-v2 (stand-in)"
    return name


def _ratio_field(ratios, variant, key):
    if variant not in ratios.index:
        return None
    x = ratios.loc[variant, key]
    return int(x) if key == "n_pairs" else float(x)


def points(x: float) -> str:
    """Signed accuracy points, two decimals; a nonzero value that would print as 0.00 gets one
    significant digit instead ("-0.0004"), so a bound just short of zero does not read as zero. Float
    noise is rounded away first: over n seeds of 25,000 test reviews a real difference is a multiple
    of 0.004/n points, so two equal means that differ by 1e-15 print "+0.00", not "-2e-15"."""
    x = round(x, 9) or 0.0  # `or 0.0`: -0.0 prints as +0.00
    return f"{x:+.1g}" if 0 < abs(x) < 0.005 else f"{x:+.2f}"


def _numbers(values, spec: str) -> list[str]:
    """Each value formatted with ``spec``, "-" where there is none (None or NaN)."""
    return ["-" if x is None or pd.isna(x) else format(x, spec) for x in values]


def _round(x, digits):
    return None if x is None or pd.isna(x) else round(float(x), digits)


def _accuracy(mean, sd, n_eval, n, failed=0) -> str:
    """'0.8500 ± 0.0100', '0.8500' for one seed, 'failed (2)' when every run failed, 'not evaluated' when
    no ok run has an accuracy (eval=False), and how many of the n runs the mean covers when some have none."""
    if n == 0 and failed:
        return f"failed ({failed})"
    if mean is None or pd.isna(mean):
        return "not evaluated"
    text = f"{mean:.4f} ± {sd:.4f}" if sd is not None and not pd.isna(sd) else f"{mean:.4f}"
    return text if n_eval == n else f"{text} ({n_eval} of {n} evaluated)"


APART = {"device": "device", "setting": "setting", "git_sha": "commit", "step_mode": "step mode"}
"""paper_table columns shown (with these headers, after N) only where they differ between rows: what
sets one configuration apart from another, or which commits and step modes its runs came from."""


def _apart(table: pd.DataFrame) -> dict:
    """The APART columns whose values differ between rows, as shown: short commits, '-' where unrecorded."""
    out = {}
    for key, header in APART.items():
        values = table[key].map(lambda x: "-" if x is None or pd.isna(x) else str(x))
        if values.nunique() > 1:
            out[header] = values.map(lambda x: " ".join(c[:7] for c in x.split())) if key == "git_sha" else values
    return out


def _display(table: pd.DataFrame) -> pd.DataFrame:
    """Human formats: the interval in one column, '-' for what does not apply."""

    def interval(r):
        if r["diff_pts"] is None or pd.isna(r["diff_pts"]):
            return "-"
        if r["ci95_low"] is None or pd.isna(r["ci95_low"]):
            return f"{points(r['diff_pts'])} (n={int(r['n_pairs'])})"
        return f"{points(r['diff_pts'])} [{points(r['ci95_low'])}, {points(r['ci95_high'])}]"

    def ratio(r, short):
        x, low, high = r[f"{short}_ratio"], r[f"{short}_ci_low"], r[f"{short}_ci_high"]
        if x is None or pd.isna(x):
            return "-"
        if low is None or pd.isna(low):
            return f"{x:.2f}x (n={int(r[f'{short}_n_pairs'])})"
        return f"{x:.2f}x [{low:.2f}, {high:.2f}]"

    out = pd.DataFrame(
        {
            "model": table["model"].map(model_label),
            "N": table["max_length"],
            **_apart(table),
            "variant": table["variant"],
            "n": table["n"],
            "accuracy": [
                _accuracy(*r) for r in zip(table["accuracy"], table["sd"], table["n_eval"], table["n"], table["failed"])
            ],
            "vs baseline, pts [95% CI]": table.apply(interval, axis=1),
            "train s, with compile": _numbers(table["train_time_s"], ".1f"),
            "excl. compile s": _numbers(table["train_time_excl_compile_s"], ".2f"),
            "time excl. compile vs baseline [95% CI]": table.apply(ratio, axis=1, short="time"),
            "time with compile vs baseline [95% CI]": table.apply(ratio, axis=1, short="time_compile"),
            "end to end s": _numbers(table["end_to_end_s"], ".1f"),
            "end to end vs baseline [95% CI]": table.apply(ratio, axis=1, short="end_to_end"),
            "peak MB": _numbers(table["peak_memory_mb"], ".0f"),
            "memory vs baseline [95% CI]": table.apply(ratio, axis=1, short="memory"),
        }
    )
    if table["failed"].any():
        out["failed"] = table["failed"]
    return out


def with_trainer(records: pd.DataFrame, trainer: pd.DataFrame | None = None) -> pd.DataFrame:
    """``paper_table`` of ``records``, and after its rows the Trainer's (``trainer_rows``) where given."""
    table = paper_table(records)
    return table if trainer is None else pd.concat([table, trainer_rows(records, trainer)], ignore_index=True)


def display_table(records: pd.DataFrame, trainer: pd.DataFrame | None = None) -> pd.DataFrame:
    """The table as people read it (``paper_table`` in human formats): what ``format_table`` prints, as a
    DataFrame for a page to show; with the Trainer's row last where ``trainer`` records are given."""
    return _display(with_trainer(records, trainer))


def format_table(records: pd.DataFrame, fmt: str = "text", trainer: pd.DataFrame | None = None) -> str:
    """The table in ``fmt``: text, markdown, latex (booktabs) or csv (numbers, one column each); with the
    Trainer's row last (its variant 'trainer', its setting TRAINER_SETTING) where ``trainer`` records
    (analysis.trainer.load_trainer) are given."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {fmt!r}; valid: {', '.join(FORMATS)}")
    table = with_trainer(records, trainer)
    if fmt == "csv":
        return table.to_csv(index=False)
    shown = _display(table)
    if fmt == "markdown":
        return shown.to_markdown(index=False)
    if fmt == "latex":
        return shown.to_latex(index=False, escape=True).replace("±", r"$\pm$")
    return shown.to_string(index=False)
