"""GPU-busy seconds by part (training/busy.py): samples of the utilisation charged to the part the run is in."""

import time

import pytest
import torch

from attnpaper.training.busy import BusySampler
from attnpaper.training.clock import Clock


def test_samples_are_charged_to_the_part_the_run_is_in():
    """A device busy half the time during "data" and fully during "training": about 0.5 x and 1 x their walls."""
    clock = Clock(launched=time.time())
    state = {"share": 0.5}
    clock.sampler = BusySampler(lambda: state["share"], "other", every=0.005)
    with clock.part("data"):
        time.sleep(0.3)
    clock.now("training")
    state["share"] = 1.0
    time.sleep(0.3)
    clock.now("other")
    state["share"] = 0.0
    time.sleep(0.05)
    busy = clock.stop()["gpu_busy_s"]
    assert 0.1 < busy["data"] < 0.2, busy  # 0.5 x 0.3 s
    assert 0.2 < busy["training"] < 0.36, busy  # 1.0 x 0.3 s
    assert busy.get("other", 0.0) < 0.03, busy
    assert clock.sampler is None  # stopped with the clock


def test_a_sampler_that_fails_stops_and_keeps_what_it_charged():
    calls = []

    def read():
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("the device went away")
        return 1.0

    sampler = BusySampler(read, "steps", every=0.005)
    time.sleep(0.1)
    busy = sampler.stop()
    assert len(calls) == 4 and 0 < busy["steps"] < 0.05


def test_no_gpu_no_sampling_and_no_field():
    clock = Clock(launched=time.time())
    clock.watch(torch.device("cpu"))
    assert clock.sampler is None and "gpu_busy_s" not in clock.stop()


@pytest.mark.cuda
def test_gpu_busy_is_sampled_from_nvml_on_a_gpu():
    """On a GPU with NVML, half a second of matmuls in one part shows as most of that part's time busy."""
    clock = Clock(launched=time.time())
    clock.watch(torch.device("cuda"))
    assert clock.sampler is not None, "NVML could not be read on this GPU"
    x = torch.randn(4096, 4096, device="cuda")
    with clock.part("steps"):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.5:
            x = (x @ x).clamp_(-1, 1)
        torch.cuda.synchronize()
    with clock.part("idle"):
        time.sleep(0.5)
    busy = clock.stop()["gpu_busy_s"]
    assert busy["steps"] > 0.25 and busy.get("idle", 0.0) < 0.25, busy


@pytest.mark.cuda
def test_gpu_busy_from_the_raw_trace_equals_the_profilers_own_averages():
    """device_times reads kernel durations from the raw trace; on real GPU work (a matmul, a replayed CUDA
    graph, an annotated AdamW step, SDPA's fused kernel) it gives the same names and times as key_averages'
    device self times, and the scaling sweep's attention time is the same either way."""
    from types import SimpleNamespace

    from attnpaper.bench.model import attention_kernel_ms
    from attnpaper.training.measure import device_times, start_profiler, stop_profiler

    q = torch.randn(4, 12, 128, 64, device="cuda", dtype=torch.bfloat16)

    x = torch.randn(512, 512, device="cuda", requires_grad=True)
    opt = torch.optim.AdamW([x])
    graph, stream = torch.cuda.CUDAGraph(), torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        y = x.detach() @ x.detach()  # warm-up on the side stream, as graph capture wants
    torch.cuda.current_stream().wait_stream(stream)
    with torch.cuda.graph(graph):
        y = x.detach() @ x.detach()
    prof = start_profiler(torch.device("cuda"))
    for _ in range(3):
        (x @ x).sum().backward()
        opt.step()
        graph.replay()
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    torch.cuda.synchronize()
    out = stop_profiler(prof, 3)
    raw = device_times(prof)
    averaged = device_times(SimpleNamespace(key_averages=prof.key_averages))  # the tree, as before
    assert raw.keys() == averaged.keys() and len(raw) >= 3, (raw, averaged)
    for name, us in raw.items():
        assert us == pytest.approx(averaged[name], rel=1e-6, abs=0.01), name
    assert out["gpu_busy_ms_per_step"] == pytest.approx(sum(averaged.values()) / 3000, rel=1e-6)
    attention = attention_kernel_ms(prof, 3)
    assert attention[0] > 0 and attention[1]  # SDPA's kernel found
    old = attention_kernel_ms(SimpleNamespace(key_averages=prof.key_averages), 3)
    assert attention[0] == pytest.approx(old[0], rel=1e-6) and attention[1] == old[1]
    assert y.shape == (512, 512)
