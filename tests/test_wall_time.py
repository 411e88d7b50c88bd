"""Issue 38: every record holds its wall time end to end and its parts, and the table shows it beside training time."""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import make_record
from scipy import stats

from attnpaper.analysis.results import load_records, paired_ratio_vs_baseline
from attnpaper.analysis.tables import format_table, paper_table
from attnpaper.experiment.records import read_record, record_name, write_record
from attnpaper.experiment.run import run_and_record
from attnpaper.training.clock import LAUNCH_ENV, PARTS, Clock, launched_at, process_started_at
from attnpaper.training.config import SMOKE, RunConfig

ROOT = Path(__file__).resolve().parent.parent


def test_launch_is_the_sweeps_time_else_the_process_start(monkeypatch):
    now = time.time()
    monkeypatch.setenv(LAUNCH_ENV, repr(now - 7.5))
    assert launched_at(now) == now - 7.5
    started = process_started_at()
    assert started is not None and 0 < now - started < 24 * 3600  # this test process, started before now
    for bad in (repr(now + 60), "soon"):  # a launch in the future or not a number: the process start instead
        monkeypatch.setenv(LAUNCH_ENV, bad)
        assert launched_at(now) == started
    monkeypatch.delenv(LAUNCH_ENV)
    assert launched_at(now) == started


def test_process_start_covers_what_ran_before_the_clock():
    """Run alone, "start" counts from the interpreter's start: a child that sleeps 0.5 s first sees >= 0.4 s."""
    code = "import time; time.sleep(0.5); from attnpaper.training.clock import Clock; print(Clock().parts['start'])"
    env = {k: v for k, v in os.environ.items() if k != LAUNCH_ENV} | {"PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert 0.4 <= float(out.stdout) < 60


def test_clock_parts_add_up_to_no_more_than_the_whole():
    clock = Clock(launched=time.time() - 2.0)
    with clock.part("data"):
        time.sleep(0.05)
    clock.mark()
    time.sleep(0.02)
    clock.lap("model")
    time.sleep(0.02)
    clock.add("steps", 0.01)  # measured elsewhere (the Meter), within time that passed
    clock.add("compile", -1.0)  # an estimate below zero counts as none
    out = clock.stop()
    parts = out["time_parts_s"]
    assert list(parts) == ["start", "data", "model", "compile", "steps", "other"]
    assert parts["start"] == pytest.approx(2.0, abs=0.05) and parts["data"] >= 0.05 and parts["model"] >= 0.02
    assert parts["compile"] == 0.0 and parts["steps"] == 0.01
    assert sum(parts.values()) == pytest.approx(out["end_to_end_s"])
    assert parts["other"] >= 0 and out["end_to_end_s"] >= 2.07


def test_a_run_records_every_part_of_its_wall_time(tmp_path, monkeypatch):
    monkeypatch.setenv(LAUNCH_ENV, repr(time.time() - 3.0))  # as the sweep sets it: the kernel started 3 s ago
    cfg = RunConfig(**{**SMOKE, "epochs": 1, "train_samples": 96, "test_samples": 64, "checkpoint_every": 2})
    rec = run_and_record(cfg, tmp_path / "records", device="cpu", progress=False)
    assert read_record(tmp_path / "records" / record_name(cfg))["time_parts_s"] == rec["time_parts_s"]
    parts, whole = rec["time_parts_s"], rec["end_to_end_s"]
    assert list(parts) == [*PARTS, "other"]
    assert all(math.isfinite(x) and x >= 0 for x in parts.values()), parts
    named = sum(v for k, v in parts.items() if k != "other")
    assert named <= whole and sum(parts.values()) == pytest.approx(whole)
    assert parts["start"] >= 3.0 and whole >= 3.0 + rec["train_time_s"]
    assert parts["data"] > 0 and parts["model"] > 0 and parts["evaluation"] > 0 and parts["saving"] > 0
    assert parts["compile"] + parts["steps"] == pytest.approx(rec["train_time_s"])  # a fresh run: all its own
    assert parts["saving"] == pytest.approx(rec["checkpoint_time_s"])


def test_a_failed_run_records_its_wall_time_too(tmp_path):
    cfg = RunConfig(**{**SMOKE, "lr": 1e30, "epochs": 1, "train_samples": 64})  # NaN by its second (last) step
    with pytest.raises(FloatingPointError):
        run_and_record(cfg, tmp_path, device="cpu", progress=False)
    rec = read_record(tmp_path / record_name(cfg))
    assert rec["status"] == "failed" and rec["end_to_end_s"] > 0
    assert {"start", "data", "model"} <= set(rec["time_parts_s"]) and "evaluation" not in rec["time_parts_s"]


def write_records(folder, recs):
    for r in recs:
        write_record(r, Path(folder) / "records" / f"{r['variant']}_seed{r['seed']}_{r['config_hash']}.json")


def test_table_shows_end_to_end_beside_training_time_with_paired_ratios(tmp_path):
    base, flash = [30.0, 33.0, 31.0], [24.0, 28.0, 25.5]
    recs = [make_record("baseline", s, 0.85, end_to_end_s=t) for s, t in enumerate(base)]
    recs += [make_record("flash", s, 0.85, end_to_end_s=t) for s, t in enumerate(flash)]
    recs += [make_record("flash", 3, 0.85, end_to_end_s=1.0)]  # no baseline of seed 3: not paired
    write_records(tmp_path, recs)
    loaded = load_records(tmp_path)
    logs = [math.log(f / b) for f, b in zip(flash, base, strict=True)]
    half = stats.t.ppf(0.975, 2) * statistics.stdev(logs) / math.sqrt(3)
    row = paired_ratio_vs_baseline(loaded, "end_to_end_s").set_index("variant").loc["flash"]
    assert row["n_pairs"] == 3 and row["ratio"] == pytest.approx(math.exp(statistics.mean(logs)))
    assert row["ci_low"] == pytest.approx(math.exp(statistics.mean(logs) - half))
    shown = format_table(loaded, "markdown")
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in shown.splitlines()]
    col = cells[0].index("end to end s")
    assert cells[0][col - 1] == "time with compile vs baseline [95% CI]"  # beside the training times
    assert cells[0][col + 1] == "end to end vs baseline [95% CI]" and [c[col] for c in cells[2:]] == ["31.3", "19.6"]
    assert f"{row['ratio']:.2f}x [{row['ci_low']:.2f}, {row['ci_high']:.2f}]" in shown
    table = paper_table(loaded).set_index("variant")
    assert table.loc["baseline", "end_to_end_s"] == pytest.approx(round(statistics.mean(base), 1))
    assert table.loc["flash", "end_to_end_s"] == pytest.approx(round(statistics.mean(flash + [1.0]), 1))
    assert table.loc["flash", "end_to_end_n_pairs"] == 3
    assert "end_to_end_ratio" in format_table(loaded, "csv").splitlines()[0]


def test_records_without_end_to_end_show_a_dash(tmp_path):
    write_records(tmp_path, [make_record(v, s, 0.85) for v in ("baseline", "flash") for s in range(2)])
    loaded = load_records(tmp_path)
    assert "end to end vs baseline [95% CI]" in format_table(loaded, "text")
    with pytest.raises(ValueError, match="no successful 'baseline' runs with end_to_end_s"):
        paired_ratio_vs_baseline(loaded, "end_to_end_s")
    shown = format_table(loaded, "markdown").splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in shown]
    col = cells[0].index("end to end s")
    assert [c[col] for c in cells[2:]] == ["-", "-"] and [c[col + 1] for c in cells[2:]] == ["-", "-"]
