"""Issue 38, target 6: a run's timed work has the device to itself (training/exclusive.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from attnpaper.experiment.run import run_and_record
from attnpaper.training import exclusive
from attnpaper.training.config import SMOKE, RunConfig

ROOT = Path(__file__).resolve().parent.parent

HOLDER = """
import sys, time
from attnpaper.training.exclusive import hold
with hold("cpu") as waited:
    t0 = time.time()
    time.sleep(float(sys.argv[1]))
    print(t0, time.time(), waited)
"""


def test_two_processes_never_hold_the_device_at_once(tmp_path):
    """Three processes ask at once; their held spans do not overlap, and the later ones waited."""
    env = os.environ | {"PYTHONPATH": str(ROOT), exclusive.LOCK_DIR_ENV: str(tmp_path)}
    env.pop("LOCAL_RANK", None)
    procs = [
        subprocess.Popen([sys.executable, "-c", HOLDER, "0.8"], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    spans = sorted(tuple(map(float, p.communicate(timeout=120)[0].split())) for p in procs)
    assert all(p.returncode == 0 for p in procs)
    for (_, end, _), (start, _, waited) in zip(spans, spans[1:]):
        assert start >= end - 0.01, spans  # the next one took it only after the last let go
        assert waited > 0.3, spans


def test_the_lock_is_named_for_the_device_and_a_cpu_rank(tmp_path, monkeypatch):
    monkeypatch.setenv(exclusive.LOCK_DIR_ENV, str(tmp_path))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert exclusive.lock_path("cpu") == tmp_path / "attnpaper-cpu.lock"
    monkeypatch.setenv("LOCAL_RANK", "1")  # data-parallel ranks on one CPU wait for each other: one lock each
    assert exclusive.lock_path("cpu") == tmp_path / "attnpaper-cpu-rank1.lock"


def test_a_run_waits_outside_its_timed_work_and_records_the_wait(tmp_path, monkeypatch):
    """Another holder keeps the device 1.5 s: the run waits before loading anything, and the wait is its
    part "waiting", inside its end-to-end time and outside its training time."""
    monkeypatch.setenv(exclusive.LOCK_DIR_ENV, str(tmp_path / "locks"))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    held, release = threading.Event(), threading.Event()

    def other():
        with exclusive.hold("cpu"):
            held.set()
            release.wait(timeout=60)

    thread = threading.Thread(target=other)
    thread.start()
    held.wait(timeout=60)
    threading.Timer(1.5, release.set).start()
    cfg = RunConfig(**{**SMOKE, "epochs": 1, "train_samples": 64, "test_samples": 32})
    t0 = time.perf_counter()
    rec = run_and_record(cfg, tmp_path / "records", device="cpu", progress=False)
    thread.join()
    parts = rec["time_parts_s"]
    assert 1.2 <= parts["waiting"] <= time.perf_counter() - t0
    assert rec["end_to_end_s"] >= parts["waiting"] + rec["train_time_s"]
    assert rec["train_time_s"] == pytest.approx(parts["compile"] + parts["steps"])
