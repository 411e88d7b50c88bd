"""The device to one run at a time: a run's timed work never overlaps another attnpaper run's (issue 38).

``train`` holds an exclusive ``flock`` on a lock file named for its device (the GPU's UUID, or "cpu")
from before it loads its model to after it has scored the test split, so any other training on that
device, from a second sweep, a benchmark or a notebook, waits outside the timed phase. What may
overlap is what comes before: a kernel's start and imports. The wait is the record's time part
"waiting" (part of its end-to-end wall, never of its training time). flock, not a claim file
(experiment/claims.py): the kernel frees it when the process dies, however it dies, and a waiter
needs no polling; one host only, which is where a GPU is.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from pathlib import Path

LOCK_DIR_ENV = "ATTNPAPER_LOCK_DIR"
"""Folder of the lock files (default: the system's temporary folder, shared by every process here)."""


def gpu_uuid(device) -> str:
    """The CUDA device's UUID as torch gives it (its index, or the current device's where it has none)."""
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    return str(torch.cuda.get_device_properties(index).uuid)


def device_key(device) -> str:
    """A name for the device that every process here agrees on: the GPU's UUID (indices change with
    CUDA_VISIBLE_DEVICES), else its type, and on a CPU the data-parallel rank (ranks share the CPU
    and wait for each other: one lock for all would stop them)."""
    import torch

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return "gpu-" + gpu_uuid(device)
    rank = os.environ.get("LOCAL_RANK")
    return device.type + (f"-rank{rank}" if rank is not None else "")


def lock_path(device) -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or tempfile.gettempdir()) / f"attnpaper-{device_key(device)}.lock"


@contextlib.contextmanager
def hold(device, clock=None):
    """Hold ``device`` alone inside the block; the time spent waiting for it is charged to ``clock``'s
    part "waiting" (when there is a clock). Yields the seconds waited."""
    path = lock_path(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        t0 = time.perf_counter()
        if clock is not None:
            clock.now("waiting")
        fcntl.flock(fd, fcntl.LOCK_EX)
        waited = time.perf_counter() - t0
        if clock is not None:
            clock.add("waiting", waited)
            clock.now("other")
        yield waited
    finally:
        os.close(fd)  # closing the descriptor frees the lock
