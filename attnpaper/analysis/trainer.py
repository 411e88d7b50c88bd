"""The Trainer reference row (issue 39) read back: transformers' Trainer on the same data and seeds as the runs
(bench/trainer_ref.py writes its records to a results folder's trainer/), beside the variants as what a
reader gets without this book: its own accuracy, times and peak memory, and each paired with the
baseline's runs of the same seeds as the table pairs a variant with the baseline (answer.trainer_row; the
results table's row: tables.trainer_rows)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .results import GROUP, load_records, summarise

TRAINER = "trainer"
"""The Trainer records' variant (bench.trainer_ref.TRAINER; that module imports torch, this one does not)."""
FOLDER = "trainer"
"""Where a results folder keeps them: trainer/trainer_seed{N}_{hash}.json."""


def trainer_folder(root) -> Path | None:
    """``root``/trainer where it holds a record file (*.json, not hidden); None where it is absent or empty."""
    from ..experiment.records import is_record_path

    folder = Path(root) / FOLDER
    return folder if folder.is_dir() and any(is_record_path(p) for p in folder.glob("*.json")) else None


def load_trainer(*folders, warn=None) -> pd.DataFrame:
    """The Trainer's records in ``folders``, one row each, read and checked as ``load_records`` reads the runs'
    (variant 'trainer' only, so they never pool with them). Its runs compile nothing, so their
    ``train_time_excl_compile_s`` is their ``train_time_s``: they pair with the baseline's training time
    both without compile and with it."""
    records = load_records(*folders, warn=warn, variants=(TRAINER,))
    return records.assign(train_time_excl_compile_s=records["train_time_s"])


def trainer_figures(trainer: pd.DataFrame) -> dict:
    """The Trainer's own figures as the results table shows a variant's: successful and failed runs, accuracy
    mean and sd, training time, end to end (means over the runs that had the GPU to themselves) and peak
    memory (NaN where not measured: a CPU has no peak). Refused unless one configuration on one device."""
    rows = summarise(trainer)
    if len(rows) != 1:
        raise ValueError(f"Trainer records of {len(rows)} configurations/devices; the row reads one")
    r = rows.iloc[0]
    return {
        "n": int(r["n"]),
        "failed": int(r["failed"]),
        "n_eval": int(r["n_eval"]),
        "accuracy": float(r["acc_mean"]),
        "accuracy_sd": float(r["acc_std"]),
        "n_timed": int(r["n_timed"]),
        "train_s": float(r["train_time_s"]),
        "end_to_end_s": float(r["end_to_end_s"]),
        "peak_mb": float(r["peak_memory_mb"]),
        **{k: str(r[k]) for k in GROUP if k != "max_length"},
        "max_length": int(r["max_length"]),
    }
