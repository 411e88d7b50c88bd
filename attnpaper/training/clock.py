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
    block encloses; ``stop()`` gives the record's ``end_to_end_s`` and ``time_parts_s``. ``watch(device)``
    also samples the GPU's utilisation (training/busy.py) into ``gpu_busy_s`` by part: the blocks' names,
    and between them what ``now(name)`` last said ("training" is compile and steps together)."""

    def __init__(self, launched: float | None = None):
        wall, self.begin = time.time(), time.perf_counter()
        launched = launched_at(wall) if launched is None else launched
        self.parts = {"start": max(0.0, wall - launched)}
        self.t = self.begin
        self.sampler = None

    def watch(self, device) -> None:
        """Sample ``device``'s utilisation from now to ``stop`` (a CUDA device with NVML; else nothing)."""
        from .busy import BusySampler, nvml_utilisation

        read = nvml_utilisation(device) if getattr(device, "type", None) == "cuda" else None
        if read is not None and self.sampler is None:
            self.sampler = BusySampler(read, "other")

    def now(self, name: str) -> None:
        """The part the run is in from here on, for the GPU-busy samples (the wall is charged as before)."""
        if self.sampler is not None:
            self.sampler.label = name

    def add(self, name: str, seconds: float) -> None:
        self.parts[name] = self.parts.get(name, 0.0) + max(0.0, seconds)

    @contextlib.contextmanager
    def part(self, name: str):
        t0, before = time.perf_counter(), self.sampler.label if self.sampler else None
        self.now(name)
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)
            self.now(before)

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
        out = {"end_to_end_s": total, "time_parts_s": parts}
        if self.sampler is not None:  # approximate GPU-busy seconds by part (NVML utilisation samples)
            out["gpu_busy_s"] = self.sampler.stop()
            self.sampler = None
        return out
