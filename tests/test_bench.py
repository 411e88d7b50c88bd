"""The side-by-side benchmark on a tiny model: rows, rotation, the repeated first variant, the table."""

import json

import numpy as np
import pytest
import torch

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
            time.sleep(0.004 if shape == (4096,) else 0.001)
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
