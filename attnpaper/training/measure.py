"""What a run measures besides its loss: device and versions, syncs, step times, GPU busy time, memory.

The loop and the benchmarks (attnpaper.bench) share these; none of them syncs with the GPU except
where its docstring says so.
"""
from __future__ import annotations

import contextlib
import platform
import time

import torch

MB = 2**20
def device_info() -> dict:
    """What ran the job: the GPU's name (or the CPU) and the library versions."""
    import transformers

    info = {"device": "cpu " + (platform.processor() or platform.machine()), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info.update(device=torch.cuda.get_device_name(), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    try:
        import flash_attn

        info["flash_attn"] = flash_attn.__version__
    except ImportError:
        pass
    return info


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def memory_breakdown(model, optimizer) -> dict:
    """Bytes held by weights, gradients and optimizer state, in MB (the static part of the peak)."""
    def nbytes(ts):
        return sum(t.numel() * t.element_size() for t in ts) / MB

    params = [p for p in model.parameters()]
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    # One gradient per trainable weight exists from backward to the optimizer step (freed after it).
    return {"weights_mb": nbytes(params), "gradients_mb": nbytes(p for p in params if p.requires_grad),
            "optimizer_mb": nbytes(state)}


def start_profiler(device):
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    prof = profile(activities=acts)
    prof.__enter__()
    return prof


def stop_profiler(prof, steps) -> dict:
    """GPU kernel time per step and the three costliest kernels.

    Only device-side kernels and copies are summed: a CPU op's self device time repeats the time of
    the kernels it launched, and a user annotation (e.g. ``Optimizer.step#AdamW.step``) has a device-side
    span over kernels already counted; both are left out.
    """
    from torch.autograd import DeviceType

    prof.__exit__(None, None, None)
    avgs = prof.key_averages()
    cpu_names = {e.key for e in avgs if e.device_type == DeviceType.CPU}  # ops and annotations
    events = [e for e in avgs if e.device_type != DeviceType.CPU and e.key not in cpu_names
              and e.self_device_time_total > 0]
    busy_us = sum(e.self_device_time_total for e in events)
    top = sorted(events, key=lambda e: -e.self_device_time_total)[:3]
    return {"gpu_busy_ms_per_step": busy_us / 1000 / steps,
            "top_gpu_ops": [[e.key[:80], round(e.self_device_time_total / 1000 / steps, 3)] for e in top]}


@contextlib.contextmanager
@contextlib.contextmanager
@contextlib.contextmanager
def count_syncs(counts: list):
    """Count the host-device synchronisations inside the block (CUDA's sync debug mode), appended to counts."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")
    counts.append(sum("synchroniz" in str(w.message) for w in caught))


def mark(device):
    """A timestamp that does not sync: a CUDA event on the GPU, the host clock on a CPU."""
    if device.type == "cuda":
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev
    return time.perf_counter()


def elapsed_ms(marks, device) -> list[float]:
    """Milliseconds between consecutive marks (one step each)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        return [a.elapsed_time(b) for a, b in zip(marks, marks[1:])]
    return [1000 * (b - a) for a, b in zip(marks, marks[1:])]
