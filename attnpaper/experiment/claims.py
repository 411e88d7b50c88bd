"""Claims: one process per run, and who else shares the GPU while it runs.

A sweep claims a run by creating ``claims/<run>.claim`` exclusively (O_EXCL, which also holds on
NFS v3+). While the run goes on, a heartbeat thread refreshes the claim's time and looks at the
other live claims: any on this host that share its GPU (or CPU) make the run's timing contended,
and the record says so (``notes.concurrent_runs``). A claim whose process is gone (this host) or
whose heartbeat stopped (another host) is stale and is taken over.

Not ``filelock``: its locks (flock) name no holder and are unreliable between hosts on NFS, while a
claim is a file that names its holder, device and heartbeat, which other sweeps here or on another
host read to tell a live run from a dead one and to see who shares their device.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

from ..files import pid_alive

HEARTBEAT_S = 2.0
STALE_S = 120.0  # another host's claim with no heartbeat for this long is abandoned


def device_slot() -> str:
    """What a run here occupies: the visible GPUs ('0', '0,1'), 'gpu' for all of them, or 'cpu'."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() != "":
        return visible.strip()
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def _overlap(a: str, b: str) -> bool:
    if "cpu" in (a, b):
        return a == b
    if "gpu" in (a, b):
        return True
    return bool(set(a.split(",")) & set(b.split(",")))


def read_claim(path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def is_stale(path, info: dict | None) -> bool:
    """The claiming process is gone: dead on this host, or silent for STALE_S elsewhere."""
    try:
        age = time.time() - Path(path).stat().st_mtime
    except FileNotFoundError:
        return False
    if info is None:  # unreadable: being written right now, or left half-written by a kill
        return age > STALE_S
    if info.get("host") == socket.gethostname():
        return not pid_alive(int(info.get("pid", -1)))
    return age > STALE_S


class Claim:
    """An exclusive claim on one run; use ``acquire`` and ``release`` (or ``with``)."""

    def __init__(self, folder, run: str, slot: str | None = None):
        self.folder, self.run = Path(folder), run
        self.path = self.folder / f"{run}.claim"
        self.slot = slot or device_slot()
        self.info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "slot": self.slot,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self.concurrent = 1  # the most runs seen on this run's device at once, itself included
        self.took_over: dict | None = None
        self._stop = threading.Event()
        self._thread = None

    def acquire(self) -> bool:
        """True when this process now holds the run; False when a live process does."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = read_claim(self.path)
                if not is_stale(self.path, info):
                    self.holder = info
                    return False
                aside = self.path.with_name(f".stale-{os.getpid()}-{self.path.name}")
                try:
                    os.replace(self.path, aside)  # one taker wins; the others find the file gone or fresh
                    self.took_over = info
                    aside.unlink(missing_ok=True)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.info, f)
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
            return True
        self.holder = read_claim(self.path)
        return False

    def _beat(self):
        while True:
            self.concurrent = max(self.concurrent, 1 + len(self.sharing()))
            if self._stop.wait(HEARTBEAT_S):
                return
            try:
                os.utime(self.path)
            except OSError:
                pass

    def sharing(self) -> list[dict]:
        """The other live claims on this host whose device overlaps this run's."""
        out = []
        for p in self.folder.glob("*.claim"):
            if p == self.path:
                continue
            info = read_claim(p)
            if (
                info
                and info.get("host") == self.info["host"]
                and _overlap(info.get("slot", ""), self.slot)
                and not is_stale(p, info)
            ):
                out.append(info)
        return out

    def release(self):
        self._stop.set()
        if self._thread:
            self._thread.join()
            self._thread = None
        self.concurrent = max(self.concurrent, 1 + len(self.sharing()))
        if read_claim(self.path) == self.info:
            self.path.unlink(missing_ok=True)

    def __enter__(self):
        if not self.acquire():
            raise RuntimeError(f"{self.run} is claimed by {self.holder}")
        return self

    def __exit__(self, *exc):
        self.release()
