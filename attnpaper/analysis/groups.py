"""What tells the results table's groups apart (setting, commit, step mode, errors), and the pooling a row
would otherwise hide: two ``--set lr`` sweeps in one folder, or one configuration run at two commits."""

from __future__ import annotations

import dataclasses

import pandas as pd

from ..training.config import NOT_HASHED, RunConfig
from .results import GROUP

ROW = GROUP + ["variant"]
"""One row of the results table: a configuration on a device, and a variant."""
SHOWN = ("model", "max_length")
"""Settings with a table column of their own: never repeated in the setting label."""
_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))


def record_config(rec) -> dict:
    """A record's hashed settings: its ``config`` dict, else (older records) its top-level RunConfig fields;
    without what a row pools over (variant, seed, notes) and what has a column of its own."""
    config = rec.get("config")
    if not isinstance(config, dict):
        config = {k: rec[k] for k in _FIELDS if k in rec and not _missing(rec[k])}
    return {k: v for k, v in config.items() if k not in NOT_HASHED and k not in SHOWN}


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and x != x)


def setting_labels(records: pd.DataFrame) -> dict:
    """Per configuration hash, the settings that differ between the hashes present ("lr=0.0001"); "" when
    there is one hash, "config <hash>" when the records do not show what differs."""
    configs = {h: record_config(g.iloc[0]) for h, g in records.groupby("config_hash", sort=False)}
    if len(configs) < 2:
        return {h: "" for h in configs}
    keys = sorted({k for c in configs.values() for k in c})
    differ = [k for k in keys if len({repr(c.get(k, "(unset)")) for c in configs.values()}) > 1]
    return {h: ", ".join(f"{k}={c.get(k, '(unset)')}" for k in differ) or f"config {h}" for h, c in configs.items()}


def _runs(g: pd.DataFrame) -> pd.DataFrame:
    """The runs whose numbers a row shows: its ok records, or all of them where every run failed."""
    ok = g[g["status"] == "ok"]
    return ok if len(ok) else g


def _values(g: pd.DataFrame, key: str) -> list:
    return sorted({str(x) for x in g[key] if not _missing(x)}) if key in g else []


def _first_lines(g: pd.DataFrame) -> str | None:
    """The distinct first lines of the row's failed runs' errors, joined by " | "; None without failures."""
    failed = g[g["status"] != "ok"]
    lines = sorted({str(e).strip().splitlines()[0] if str(e).strip() else "?" for e in failed["error"].fillna("")})
    return " | ".join(lines) or None


def provenance(records: pd.DataFrame) -> pd.DataFrame:
    """Per table row (ROW): config_hash, setting, git_sha (the commits of its runs, space-separated),
    step_mode (its step modes, "+"-joined; None where no record says) and error (failed runs' first lines)."""
    labels = setting_labels(records)
    rows = []
    for key, g in records.groupby(ROW, sort=False, dropna=False):
        runs = _runs(g)
        rows.append(
            dict(zip(ROW, key))
            | {
                "setting": labels[key[0]],
                "git_sha": " ".join(_values(runs, "git_sha")) or None,
                "step_mode": "+".join(_values(runs, "step_mode")) or None,
                "error": _first_lines(g),
            }
        )
    return pd.DataFrame(rows).set_index(ROW)


def pooling_warnings(records: pd.DataFrame) -> list[str]:
    """One line per configuration and device whose ok runs span several commits or step modes: its rows
    and paired differences pool them. Devices are never pooled (each is a group of its own)."""
    out = []
    ok = records[records["status"] == "ok"]
    for (config_hash, device, *_), g in ok.groupby(GROUP, sort=True, dropna=False):
        for key, what in (("git_sha", "commits"), ("step_mode", "step modes")):
            found = _values(g, key)
            if len(found) > 1:
                shown = ", ".join(x[:12] if key == "git_sha" else x for x in found)
                out.append(
                    f"warning: configuration {config_hash} on {device} pools runs from {len(found)} {what} "
                    f"({shown}): its means and paired differences mix them; rerun at one, or keep each in its "
                    f"own folder"
                )
    return out
