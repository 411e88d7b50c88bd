"""The side-by-side benchmark on a tiny model: rows, rotation, the repeated first variant, the table."""

import json

import numpy as np
import pytest
import torch

from attnpaper.analysis.answer import published
from attnpaper.bench import step as S
from attnpaper.bench.step import bench, random_split, table


def test_random_split_follows_lengths():
    split = random_split(np.array([5, 9]), 50, seed=1)
    assert len(split) == 50 and {len(x) for x in split.ids} <= {5, 9}


def test_bench_rows_and_table(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "PROFILE_STEPS", 1)  # ten measurements: each 2 timed steps and 1 profiled, not 3 and 5
    lengths = tmp_path / "lengths.npy"
    np.save(lengths, np.array([20, 40, 64, 80], dtype=np.int32))
    out = tmp_path / "bench.json"
    modes = ("eager", "captured") if torch.cuda.is_available() else ("eager",)  # a CPU refuses captured
    rows = bench(
        ["baseline", "flash"],
        "bert-tiny-random",
        [32],
        steps=3,
        repeats=2,
        batch_size=4,
        source=str(lengths),
        out=str(out),
        step_modes=modes,
    )
    # two repeats of the (variant, mode) pairs, rotated, plus the first pair of the last repeat again
    pairs = [(r["variant"], r["step_mode_requested"]) for r in rows]
    first = [(v, m) for v in ("baseline", "flash") for m in modes]
    assert pairs[: len(first)] == first
    assert pairs[len(first) :] == first[1:] + first[:1] + first[1:2]
    for r in rows:
        assert r["step_time_ms_median"] > 0 and r["kernels"] and r["model"] == "bert-tiny-random"
        assert r["layout"] == ("packed" if r["variant"] == "flash" else "padded")
        parts = r["time_parts_s"]  # where the row's wall went: each part once, together within its wall
        assert {"data", "model", "steps", "profile", "cleanup"} <= set(parts) and parts["steps"] > 0
        assert sum(parts.values()) <= r["wall_s"] + 0.01
        if not torch.cuda.is_available():
            assert r["step_mode"] == "eager"
            assert r["gpu_busy_ms_per_step"] == 0.0 and r["top_gpu_ops"] == []  # CPU: no device kernels
    report = json.loads(out.read_text())
    text = table(report)
    assert "wall_vs_baseline" in text and "busy_vs_baseline" in text and "flash" in text
    assert "inf" not in text  # no GPU time on a CPU: blank, not infinite


def test_stock_reference_rows_measure_transformers_own_model():
    """The reference row: transformers' classifier with no attnpaper code, timed by the same Meter."""
    from attnpaper.bench.stock import measure_stock, padded_batches, stock_model
    from attnpaper.model.auto import AttnpaperBertForSequenceClassification

    assert not isinstance(stock_model("bert-tiny-random"), AttnpaperBertForSequenceClassification)
    split = random_split(np.array([10, 20, 32]), 12, vocab=2000)
    b = padded_batches(split, 4, 32)
    assert len(b) == 3 and b[0]["input_ids"].shape == (4, 32)
    assert (b[0]["attention_mask"].sum(1) == torch.tensor([min(len(x), 32) for x in split.ids[:4]])).all()
    row = measure_stock("bert-tiny-random", "eager", split, steps=8, batch_size=4, length=32, profile_steps=1)
    assert row["step_mode"] == "eager" and row["step_time_ms_median"] > 0 and 0 < row["padding_fraction"] < 1
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs a GPU; valid here: eager"):
            measure_stock("bert-tiny-random", "reduce-overhead", split, steps=2, batch_size=4, length=32)


def test_steps_of_several_shapes_are_timed_apart():
    """With batches of several shapes the report gives each shape's median and names the profiled
    shapes, so a wall median over a mix can be compared with the GPU time of the same shapes."""
    import time

    import torch

    from attnpaper.training.measure import Meter

    meter = Meter(torch.device("cpu"), "eager", total=12, timed=True, profile_steps=2)
    model = torch.nn.Linear(2, 2)
    meter.start()
    for i in range(12):
        shape = (4096,) if i % 3 else (1024,)
        with meter.step(i, shape):
            time.sleep(0.02 if shape == (4096,) else 0.002)  # 10x apart: a loaded CPU adds ms
    out = meter.report(12, 0.0, model, torch.optim.AdamW(model.parameters()))
    by = out["step_time_ms_by_shape"]
    assert set(by) == {"4096", "1024"} and by["4096"]["median_ms"] > 2 * by["1024"]["median_ms"]
    assert sum(v["steps"] for v in by.values()) == 10 and out["profiled_shapes"] == ["4096", "4096"]


def test_host_time_between_steps_is_reported():
    """The host's wait between steps (the loader's next batch) is measured apart from the step itself."""
    import time

    import torch

    from attnpaper.training.measure import Meter

    meter = Meter(torch.device("cpu"), "eager", total=8, timed=True)
    model = torch.nn.Linear(2, 2)
    meter.start()
    for i in range(8):
        time.sleep(0.006)  # waiting for a batch
        with meter.step(i, (16,)):
            time.sleep(0.001)
    out = meter.report(8, 0.0, model, torch.optim.AdamW(model.parameters()))
    assert 5 < out["host_gap_ms_median"] < 50 and out["step_time_ms_median"] > out["host_gap_ms_median"]


def test_busy_time_keeps_kernels_named_like_a_cpu_event():
    """Inductor names a CPU event after each Triton kernel it launches from Python (a warm-up or a
    recording in the profiled window): the busy time keeps that kernel's GPU time and leaves out only
    annotations, which the profiler flags itself (until f1312bb such kernels were dropped in every step)."""
    from types import SimpleNamespace as E

    from torch.autograd import DeviceType

    from attnpaper.training.measure import stop_profiler

    def ev(key, device, us, annotation=False):
        return E(key=key, device_type=device, self_device_time_total=us, is_user_annotation=annotation)

    events = [
        ev("triton_poi_fused_gelu", DeviceType.CPU, 0, True),  # Inductor's CPU event at a Python launch
        ev("triton_poi_fused_gelu", DeviceType.CUDA, 2000),  # the kernel, in every step
        ev("gemm", DeviceType.CUDA, 1000),
        ev("Optimizer.step#AdamW.step", DeviceType.CPU, 0, True),
        ev("Optimizer.step#AdamW.step", DeviceType.CUDA, 500, True),  # a span over kernels counted already
    ]
    prof = E(__exit__=lambda *a: None, key_averages=lambda: events)
    out = stop_profiler(prof, 2)
    assert out["gpu_busy_ms_per_step"] == 1.5
    assert [name for name, _ in out["top_gpu_ops"]] == ["triton_poi_fused_gelu", "gemm"]


def test_real_profiler_events_say_whether_they_are_annotations():
    """The flag the busy time relies on exists on this torch's profiler averages."""
    import torch

    from attnpaper.training.measure import start_profiler, stop_profiler

    prof = start_profiler(torch.device("cpu"))
    with torch.profiler.record_function("annotated"):
        torch.ones(4) @ torch.ones(4)
    assert stop_profiler(prof, 1)["gpu_busy_ms_per_step"] == 0  # a CPU: no device kernels, no error
    assert all(isinstance(e.is_user_annotation, bool) for e in prof.key_averages())


def test_profiled_steps_that_compile_or_record_are_counted():
    """A shape first seen in the profiled window warms up there; the report says how many such steps."""
    import torch

    from attnpaper.training.measure import Meter

    meter = Meter(torch.device("cpu"), "whole", total=10, timed=True, profile_steps=3)
    model = torch.nn.Linear(2, 2)
    meter.start()
    for i in range(10):
        with meter.step(i, (64,) if i < 9 else (32,)):  # the last, profiled step: a new shape
            pass
    out = meter.report(10, 0.0, model, torch.optim.AdamW(model.parameters()))
    assert out["profiled_shapes"] == ["64", "64", "32"] and out["profiled_warming_steps"] == 1


def test_busy_undercounted_before_the_fix_is_blank():
    """Rows from before the profiler fix whose window held a shape with no steady step (it may have
    warmed up or recorded there) get no busy time (f1312bb's 512-token flash rows were such rows);
    the committed benchmarks are from a commit with the fix, so none of theirs is flagged."""
    from attnpaper.analysis.answer import bench_rows
    from attnpaper.analysis.steps import busy_unreliable, step_table

    base = {"variant": "flash", "max_length": 512, "step_time_ms_median": 9.3, "gpu_busy_ms_per_step": 6.2}
    by = {"9216": {"median_ms": 9.0, "steps": 15}}
    old = dict(base, step_mode="whole", profiled_shapes=["9216", "8192"], step_time_ms_by_shape=by)
    assert busy_unreliable(old)
    assert not busy_unreliable(dict(old, profiled_shapes=["9216", "9216"]))  # every profiled shape was steady
    assert not busy_unreliable(dict(old, step_mode="eager"))  # nothing compiled
    assert not busy_unreliable(dict(old, profiled_warming_steps=1))  # measured with the fix
    t = step_table([old, dict(base, variant="sdpa", step_mode="whole")], ["variant"], ("wall_ms", "busy_ms"))
    assert t["busy_ms"].isna().tolist() == [True, False]

    rows = bench_rows(published() / "bench")
    assert {r["max_length"] for r in rows} >= {128, 512}  # 512: where f1312bb's flash rows were flagged
    assert [(r["variant"], r["step_mode"], r["max_length"]) for r in rows if busy_unreliable(r)] == []


def test_a_mode_measured_once_runs_at_the_first_length_and_repeat_only(monkeypatch):
    """--once captured: the campaign's captured rows, one compile each, at the first length's first repeat;
    the other modes keep every repeat, length and the repeated first pair."""
    seen = []
    row = {"step_mode": "-", "step_time_ms_median": 1.0, "peak_memory_mb": None, "padding_fraction": 0.0}
    monkeypatch.setattr(S, "measure", lambda v, model, L, *a: seen.append((L, v, a[-2])) or row)

    class Report:
        model, setup = "m", "ours"

        def add(self, v, L, r, t0, m): ...

        def save(self): ...

    S._measure_all(
        Report(), ["sdpa"], ("whole", "captured"), [128, 512], np.array([50]), (3, 2, 4), False, ("captured",)
    )
    assert (
        seen
        == [(128, "sdpa", "whole"), (128, "sdpa", "captured"), (128, "sdpa", "whole"), (128, "sdpa", "whole")]
        + [(512, "sdpa", "whole")] * 3
    )
    with pytest.raises(ValueError, match="--once captured: measured once must be among the step modes"):
        bench(["sdpa"], "bert-tiny-random", [16], 3, 1, 4, step_modes=("eager",), once=("captured",))


def test_the_t4_setup_benchmarks_eager_steps_as_a_t4_user_ran_them(tmp_path):
    """bench --setup t4 (issue 39): every row says its setup and ran on padded batches, each its own width;
    the report names the setup's fields. Recorded steps and transformers' reference rows are refused in one line."""
    lengths = tmp_path / "lengths.npy"
    np.save(lengths, np.array([5, 9, 20, 31], dtype=np.int32))
    out = tmp_path / "bench.json"
    rows = bench(["sdpa", "linear"], "bert-tiny-random", [32], 3, 1, 4, str(lengths), str(out), ("eager",), setup="t4")
    cpu = "fp32"  # precision auto: fp16 with a scaler on a GPU, where kernel_set sm75 has no bf16 (test_arms.py)
    assert [(r["setup"], r["precision"], r["layout"]) for r in rows] == [("t4", cpu, "padded")] * 3
    report = json.loads(out.read_text())
    assert report["setup"] == "t4" and report["setup_config"]["kernel_set"] == "sm75"
    for modes, reference, words in [
        (("whole", "eager"), False, "give --step-modes eager"),
        (("eager",), True, "drop it for --setup t4"),
    ]:
        with pytest.raises(ValueError, match=words):
            S.check_setup("t4", modes, reference)
    with pytest.raises(ValueError, match="unknown setup 't5'; valid: ours, t4"):
        S.check_setup("t5", ("eager",), False)
