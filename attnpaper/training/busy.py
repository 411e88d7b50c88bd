"""How busy the GPU was in each part of a run, from NVML's utilisation, sampled by a background thread.

NVML's "GPU utilisation" is the share of the last sample period (1/6 s to 1 s, by card) in which a
kernel ran; sampled every ``EVERY_S`` and charged to the part the run is in, it gives each part's
approximate GPU-busy seconds (``Clock.watch``): enough to tell a part that waits on the host from one
that keeps the GPU busy, not a kernel-level timing (the step benchmark's profiler gives that).
Where NVML or a GPU is missing, nothing is sampled and the record has no ``gpu_busy_s``.
"""

from __future__ import annotations

import threading
import time

EVERY_S = 0.05


def nvml_utilisation(device):
    """A function giving the device's utilisation in [0, 1] now, or None where NVML cannot be read."""
    from .exclusive import gpu_uuid

    try:
        import pynvml

        pynvml.nvmlInit()
        uuid = gpu_uuid(device)
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else "GPU-" + uuid)
        pynvml.nvmlDeviceGetUtilizationRates(handle)
    except Exception:  # no NVML library, no driver, a GPU it does not list: no sampling, no field
        return None
    return lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100


class BusySampler:
    """Samples ``read()`` every ``every`` seconds in a daemon thread; each sample's utilisation times the
    time since the last one is charged to ``label`` (set by the run as it goes from part to part)."""

    def __init__(self, read, label: str, every: float = EVERY_S):
        self.read, self.label, self.every = read, label, every
        self.busy: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gpu-busy", daemon=True)
        self._thread.start()

    def _loop(self):
        last = time.perf_counter()
        while not self._stop.wait(self.every):
            now = time.perf_counter()
            try:
                share = self.read()
            except Exception:  # the device went away mid-run: stop sampling, keep what was charged
                return
            self.busy[self.label] = self.busy.get(self.label, 0.0) + share * (now - last)
            last = now

    def stop(self) -> dict:
        """Stop sampling; GPU-busy seconds per part."""
        self._stop.set()
        self._thread.join()
        return dict(self.busy)
