"""Issue 38: every record holds its wall time end to end and its parts, and the table shows it beside training time."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnpaper.experiment.records import read_record, record_name
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
