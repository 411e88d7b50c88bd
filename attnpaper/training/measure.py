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
WARMUP_CALLS = 3  # a captured shape runs compiled, then is recorded as a graph, then replays


def device_info() -> dict:
    """What ran the job: the GPU's name (or the CPU) and the library versions."""
    import transformers

    info = {
        "device": "cpu " + (platform.processor() or platform.machine()),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info.update(device=torch.cuda.get_device_name(), cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
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
    return {
        "weights_mb": nbytes(params),
        "gradients_mb": nbytes(p for p in params if p.requires_grad),
        "optimizer_mb": nbytes(state),
    }


TOP_OPS = 8  # kernels a measurement lists by their time (enough to see where a step's GPU time goes)


def start_profiler(device):
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    prof = profile(activities=acts)
    prof.__enter__()
    return prof


def device_kernel(e, cpu) -> bool:
    """Whether a profiler average is GPU work to count: on the device, not a user annotation, some time."""
    return e.device_type != cpu and not e.is_user_annotation and e.self_device_time_total > 0


def stop_profiler(prof, steps) -> dict:
    """GPU kernel time per step and the TOP_OPS costliest kernels.

    Only device-side kernels and copies are summed: a CPU op's self device time repeats the time of
    the kernels it launched, and a user annotation (e.g. ``Optimizer.step#AdamW.step``) has a device-side
    span over kernels already counted; both are left out. Annotations are told by the profiler's own
    flag, not by a CPU event of the same name: Inductor wraps each Triton launch made from Python in a
    CPU event named as the kernel, so one step launched from Python in the window (a shape's warm-up or
    recording) would hide that kernel's time in every replayed step (up to f1312bb it did: busy_unreliable).
    """
    prof.__exit__(None, None, None)
    times = device_times(prof)
    top = sorted(times.items(), key=lambda kv: -kv[1])[:TOP_OPS]
    return {
        "gpu_busy_ms_per_step": sum(times.values()) / 1000 / steps,
        "top_gpu_ops": [[name[:80], round(us / 1000 / steps, 3)] for name, us in top],
    }


def device_times(prof) -> dict:
    """Microseconds of GPU work by kernel (or copy) name in a stopped profiler's window, annotations out."""
    return trace_times(prof)[0]


def trace_times(prof) -> tuple[dict, set]:
    """(microseconds of GPU work by kernel or copy name, annotations out; the names of the CPU events)
    in a stopped profiler's window.

    Read from the raw trace (``kineto_results``) where the profiler has one: the same durations that
    ``key_averages()`` sums as each device event's self time, without building its event tree, which
    for five eager steps of a BERT-sized model takes seconds of the benchmark's wall (issue 38: a
    benchmark row's parts). Elsewhere (a profiler without a raw trace) from ``key_averages()``."""
    from torch.autograd import DeviceType

    raw = getattr(getattr(prof, "profiler", None), "kineto_results", None)
    times: dict = {}
    if raw is None:
        events = prof.key_averages()
        for e in events:
            if device_kernel(e, DeviceType.CPU):
                times[e.key] = times.get(e.key, 0.0) + e.self_device_time_total
        return times, {e.key for e in events if e.device_type == DeviceType.CPU}
    from torch._C import _demangle

    cpu = set()
    for e in raw.events():
        if e.device_type() == DeviceType.CPU:
            cpu.add(e.name())
        elif not e.is_user_annotation() and e.duration_ns() > 0:
            name = _demangle(e.name())
            times[name] = times.get(name, 0.0) + e.duration_ns() / 1000
    return times, cpu


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


def upper_median(values):
    """The middle value, the upper one of an even count (a measured step, not an average of two)."""
    return sorted(values)[len(values) // 2]


def shape_name(shape) -> str:
    return "x".join(str(n) for n in shape)


def by_shape(ms, warming, shapes) -> dict:
    """Median ms of the steady (not warming) steps of each batch shape, and how many there were."""
    groups: dict = {}
    for t, w, shape in zip(ms, warming, shapes):
        if not w:
            groups.setdefault(shape_name(shape), []).append(t)
    return {k: {"median_ms": upper_median(v), "steps": len(v)} for k, v in sorted(groups.items())}


class Meter:
    """Everything a run measures besides its loss, behind a few calls from the training loop.

    ``start()`` before the first step; ``with meter.step(i, shape):`` around each step (times the first
    WARMUP_CALLS calls of each batch shape apart as compile and graph recording, marks every step with
    a CUDA event when ``timed``, and then the host's time between steps, waiting for the loader, as
    ``host_gap_ms_median``; counts host syncs on a few steps, profiles the last ``profile_steps``);
    ``with meter.paused():`` around work that is not training (checkpoint writes); ``report(...)`` at
    the end, or ``record(...)``: the report with the training run's counts, as ``train`` returns it.
    The peak-memory counter is reset on construction, before any warm-up, so the peak
    includes the CUDA graphs' pools.
    """

    def __init__(self, device, step_mode: str, total: int, timed=False, profile_steps=0):
        self.device, self.graphs, self.total = device, step_mode != "eager", total
        self.timed, self.profile_steps = timed, profile_steps
        self.shapes: dict = {}  # batch shape -> calls so far
        self.warm_s, self.warm_steps, self.paused_s = 0.0, 0, 0.0
        self.marks, self.warming, self.sync_counts, self.prof, self.profile = [], [], [], None, {}
        self.step_shapes: list = []  # the batch shape of each timed step
        self.gaps, self.left = [], None  # host ms between one step's end and the next one's start (loader wait)
        self.profiled_shapes: list = []  # the batch shape of each profiled step
        self.profiled_warming = 0  # profiled steps that compiled or recorded (their busy time is not a replay's)
        self.allocated_at_start = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.allocated_at_start = torch.cuda.memory_allocated()  # 0 in a fresh process (kernel reuse: see sweep)

    def start(self):
        sync(self.device)
        self.t0 = time.perf_counter()

    @contextlib.contextmanager
    def step(self, i: int, shape: tuple):
        if self.left is not None and self.timed:
            self.gaps.append(1000 * (time.perf_counter() - self.left))
        if self.profile_steps and i == self.total - self.profile_steps:
            self.prof = start_profiler(self.device)
        self.shapes[shape] = self.shapes.get(shape, 0) + 1
        warming = self.graphs and self.shapes[shape] <= WARMUP_CALLS
        if self.prof is not None:
            self.profiled_shapes.append(shape)
            self.profiled_warming += warming
        if self.timed and self.prof is None:
            self.marks.append(mark(self.device))
            self.warming.append(warming)
            self.step_shapes.append(shape)
        if warming:
            sync(self.device)
            t0 = time.perf_counter()
        probe = self.timed and self.device.type == "cuda" and not warming and len(self.sync_counts) < 3 and i >= 10
        with count_syncs(self.sync_counts) if probe else contextlib.nullcontext():
            yield
        if warming:
            sync(self.device)
            self.warm_s += time.perf_counter() - t0
            self.warm_steps += 1
        self.left = time.perf_counter()

    @contextlib.contextmanager
    def paused(self):
        t0 = time.perf_counter()
        yield
        self.paused_s += time.perf_counter() - t0

    def elapsed_s(self) -> float:
        """Training seconds so far, paused work left out (no sync)."""
        return time.perf_counter() - self.t0 - self.paused_s

    def report(self, steps_run: int, before_s: float, model, optimizer) -> dict:
        """Times (compile apart from training), step-time median, GPU busy time, syncs and memory."""
        if self.timed:
            self.marks.append(mark(self.device))
        sync(self.device)
        train_s = self.elapsed_s()
        if self.prof:
            t0 = time.perf_counter()
            self.profile = stop_profiler(self.prof, self.profile_steps)
            self.profile["profile_time_s"] = time.perf_counter() - t0  # the trace's processing, not a step
        steady = (train_s - self.warm_s) / max(1, steps_run - self.warm_steps)
        compile_s = max(0.0, self.warm_s - self.warm_steps * steady)
        train_s += before_s  # a resumed run: the time of the steps before its checkpoint too
        out = {
            "train_time_s": train_s,
            "compile_time_s": compile_s,
            "train_time_excl_compile_s": train_s - compile_s,
            "checkpoint_time_s": self.paused_s,
            "batch_shapes": len(self.shapes),
            **memory_breakdown(model, optimizer),
            **self.profile,
        }
        if self.sync_counts:
            out["host_syncs_per_step"] = sum(self.sync_counts) / len(self.sync_counts)
        if len(self.marks) > 1:
            ms = elapsed_ms(self.marks, self.device)  # step i: marks i to i + 1
            steady = [t for t, w in zip(ms, self.warming) if not w][min(5, len(ms) - 1) :] or ms[-1:]
            out["step_time_ms_median"] = upper_median(steady)  # compiling and recording steps left out
            if self.gaps:  # the host's time outside the step: waiting for the loader's next batch, bookkeeping
                out["host_gap_ms_median"] = upper_median(self.gaps)
            if len(self.shapes) > 1:  # batches of several shapes: each shape's median, and which were profiled
                out["step_time_ms_by_shape"] = by_shape(ms, self.warming, self.step_shapes)
                out["profiled_shapes"] = [shape_name(x) for x in self.profiled_shapes]
                out["profiled_warming_steps"] = self.profiled_warming  # written since busy is counted right
        if self.device.type == "cuda":
            out["peak_memory_mb"] = torch.cuda.max_memory_allocated() / MB
            out["activations_mb"] = out["peak_memory_mb"] - sum(
                out[k] for k in ("weights_mb", "gradients_mb", "optimizer_mb")
            )
            out["peak_reserved_mb"] = torch.cuda.max_memory_reserved() / MB
            out["allocated_at_start_mb"] = self.allocated_at_start / MB
        else:
            out["peak_memory_mb"] = None
        return out

    def record(self, run: dict, resumed_from: int, before_s: float, model, optimizer, ran: dict) -> dict:
        """The training record's measurements: ``report``'s, the steps, ``ran`` (what ran: precision, step
        mode, layout, world size, sample counts), tokens per second, padding and the kept losses.

        ``run``: the loop's progress (``checkpoint.fresh_progress``'s fields), its losses device tensors
        read here, at the end, so the loop never waits for them."""
        out = self.report(run["step"] - resumed_from, before_s, model, optimizer)
        real, slots, seconds = run["real_tokens"], run["slot_tokens"], out["train_time_s"]
        out.update(
            steps=run["step"],
            resumed_from_step=resumed_from,
            **ran,
            tokens_per_s=real / seconds,
            padded_tokens_per_s=slots / seconds,
            padding_fraction=1 - real / slots,
            loss_every_50_steps=[float(x) for x in run["losses"]],
        )
        return out
