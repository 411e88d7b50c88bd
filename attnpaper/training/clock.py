"""A run's wall time end to end and its parts, on one clock (issue 38).

A run starts when it is launched: by the sweep (``LAUNCH_ENV``, the wall-clock time it started the
run's kernel), else when this process started. ``Clock`` is made as ``run_and_record`` begins; the
time before that (kernel start, imports) is the part ``start``. Every later part is timed with
``time.perf_counter``, and the end-to-end time is ``start`` plus the perf_counter time since then, so
the parts never add up to more than the whole; ``other`` is what no part names (checks, bookkeeping).
"""

from __future__ import annotations

import contextlib
import os
import time

LAUNCH_ENV = "ATTNPAPER_LAUNCHED_AT"
"""Seconds since the epoch (time.time()) at which the sweep launched this run's kernel."""

PARTS = ("start", "waiting", "data", "model", "compile", "steps", "evaluation", "saving")
"""The named parts, in the order a run goes through them ("waiting": for the device, training/exclusive.py)."""

IMPORTED_AT = time.time()  # the launch where neither the sweep nor /proc says (not Linux)


def process_started_at() -> float | None:
    """This process's start (time.time() scale) from /proc, to a clock tick; None where there is no /proc."""
    try:
        with open("/proc/self/stat") as f:  # field 22 (after the parenthesised name): start, ticks after boot
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def launched_at(now: float | None = None) -> float:
    """When this run was launched: $ATTNPAPER_LAUNCHED_AT if set and not in the future, else this process's
    start, else this module's import."""
    now = time.time() if now is None else now
    try:
        sweep = float(os.environ[LAUNCH_ENV])
    except (KeyError, ValueError):
        sweep = None
    if sweep is not None and sweep <= now:
        return sweep
    started = process_started_at()
    return started if started is not None and started <= now else min(IMPORTED_AT, now)


class Clock:
    """Charges wall time to named parts: ``with clock.part(name):``, ``clock.add(name, s)`` for a time
    measured elsewhere (the Meter's compile and steps), ``mark()``/``lap(name)`` for a span that no
    block encloses; ``stop()`` gives the record's ``end_to_end_s`` and ``time_parts_s``."""

    def __init__(self, launched: float | None = None):
        wall, self.begin = time.time(), time.perf_counter()
        launched = launched_at(wall) if launched is None else launched
        self.parts = {"start": max(0.0, wall - launched)}
        self.t = self.begin

    def add(self, name: str, seconds: float) -> None:
        self.parts[name] = self.parts.get(name, 0.0) + max(0.0, seconds)

    @contextlib.contextmanager
    def part(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def mark(self) -> None:
        """Start a span for ``lap``."""
        self.t = time.perf_counter()

    def lap(self, name: str) -> None:
        """Charge the time since ``mark`` (or the last lap) to ``name``."""
        now = time.perf_counter()
        self.add(name, now - self.t)
        self.t = now

    def stop(self) -> dict:
        """The record's fields: seconds from launch to now (just before the record is written, so its own
        write is left out) and the parts, ``other`` the rest."""
        total = self.parts["start"] + time.perf_counter() - self.begin
        parts = {k: self.parts[k] for k in PARTS if k in self.parts}
        parts |= {k: v for k, v in self.parts.items() if k not in parts}
        parts["other"] = max(0.0, total - sum(parts.values()))
        return {"end_to_end_s": total, "time_parts_s": parts}
