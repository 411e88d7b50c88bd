"""analysis/roofline.py: chapter 2's roofline applied op by op, on synthetic op profiles (pure functions)."""

import math

import pytest
from helpers import op_profile as profile
from helpers import op_row as row

from attnpaper.analysis import cost
from attnpaper.analysis import roofline as R

T4 = "T4 (fp16 tensor core)"


def test_a_matmul_runs_at_the_tensor_core_peak_and_other_ops_at_the_bandwidth():
    spec = R.gpu_spec("t4")
    assert spec["matmul_flops"] == cost.GPUS[T4]["peak_flops"] == 65e12 and spec["bandwidth"] == 320e9
    mm = R.row_time(row(flops=65e9, nbytes=320e3), spec)  # 1 ms of compute, 1 us of traffic
    assert mm["bound"] == "compute" and mm["matmul"] and math.isclose(mm["time_s"], 1e-3)
    ew = R.row_time(row("aten.add", nbytes=640e6, elements=10**8), spec)  # 2 ms of traffic, no FLOPs charged
    assert ew["bound"] == "memory" and not ew["matmul"] and math.isclose(ew["time_s"], 2e-3)
    assert R.row_time(row("aten.view", nbytes=10**9, kernel=False), spec)["time_s"] == 0


def test_fp32_matmuls_on_a_t4_run_at_its_cuda_cores_peak():
    spec = R.gpu_spec(T4, matmul="cuda-core")
    assert spec["matmul_flops"] == cost.CUDA_CORE_FLOPS[T4] == 8.1e12
    assert math.isclose(R.row_time(row(flops=8.1e9), spec)["time_s"], 1e-3)


def test_elementwise_flops_are_charged_per_element_at_the_cuda_cores_peak():
    spec = R.gpu_spec("t4")
    r = row("aten.gelu", nbytes=320e6, elements=10**7)  # 1 ms of traffic
    be = R.predict_variant([r], 1, spec)["elementwise_breakeven"]
    assert math.isclose(be, 1e-3 * 8.1e12 / 10**7)  # 810 FLOPs per element to take 1 ms at 8.1 TFLOP/s
    assert R.row_time(r, spec, elementwise_flops=0.9 * be)["bound"] == "memory"
    slow = R.row_time(r, spec, elementwise_flops=2 * be)
    assert slow["bound"] == "compute" and math.isclose(slow["time_s"], 2e-3)


def test_a_variant_step_sums_its_rows_per_step_with_shares_launches_and_phases():
    spec = R.gpu_spec("t4")
    rows = [
        row(flops=2 * 65e9, calls=4),  # 2 ms compute-bound over 2 steps
        row("aten.add", nbytes=2 * 320e6, calls=6, phase="backward"),  # 2 ms memory-bound
        row("aten.t", calls=10, kernel=False),  # a view: no time, no launch
    ]
    p = R.predict_variant(rows, 2, spec, launch_s=1e-3)
    assert math.isclose(p["step_s"], 2e-3) and math.isclose(p["compute_bound_share"], 0.5)
    assert math.isclose(p["memory_bound_share"], 0.5) and math.isclose(p["matmul_share"], 0.5)
    assert math.isclose(p["matmul_compute_s"], 1e-3) and p["matmul_flops"] == 65e9
    assert p["phase_s"] == pytest.approx({"forward": 1e-3, "backward": 1e-3, "optimizer": 0})
    assert p["launches"] == 5 and math.isclose(p["launch_s"], 5e-3)
    assert math.isclose(p["with_launch_s"], 5e-3) and math.isclose(p["serial_s"], 7e-3)
    assert math.isclose(p["launch_breakeven_us"], 400)  # 2 ms over 5 launches
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        R.predict_variant(rows, 0, spec)


def test_the_spread_is_max_over_min_across_variants():
    pred = R.predict(
        profile({"a": ([row(flops=65e9)], 1), "b": ([row(flops=65e9), row("aten.add", nbytes=32e6)], 1)}), "t4"
    )
    s = pred["spread"]["step_s"]
    assert s == {"ratio": pytest.approx(1.1), "max": "b", "min": "a"}
    assert pred["spread"]["matmul_compute_s"]["ratio"] == 1 and "with_launch_s" not in pred["spread"]
    assert "with_launch_s" in R.predict(profile({"a": ([row(flops=1)], 1)}), launch_s=1e-6)["spread"]
    text = R.format_prediction(pred, {"baseline": 0.0873})
    assert "spread, roofline step: max/min 1.100 (b / a)" in text and "baseline 87.3" in text


def test_by_op_sums_phases_and_shapes_per_step():
    rows = [row(flops=10, nbytes=4, calls=2), row(flops=6, nbytes=2, calls=2, phase="backward"), row("aten.add")]
    assert R.by_op(rows, steps=2)[0] == {"op": "aten.mm", "calls": 2, "flops": 8, "bytes": 3, "kernel": True}


def test_the_papers_step_is_its_time_over_three_epochs_of_782_batches():
    assert R.paper_step_s(204.9) == pytest.approx(204.9 / 2346)


@pytest.mark.parametrize(
    "bad, says",
    [
        ([], "not an op profile"),
        ({"kind": R.PROFILE_KIND, "variants": {}}, "holds no variants"),
        ({"kind": R.PROFILE_KIND, "variants": {"a": {"rows": [], "steps": 0}}}, "'a' has no rows or no steps"),
        ({"kind": R.PROFILE_KIND, "variants": {"a": {"rows": [{"op": "x"}], "steps": 1}}}, "has rows without"),
    ],
)
def test_a_malformed_profile_is_refused(bad, says):
    with pytest.raises(ValueError, match=says):
        R.check_profile(bad)


def test_unknown_gpus_and_peaks_are_refused():
    with pytest.raises(ValueError, match="unknown GPU 'a100'; valid: t4, h200"):
        R.gpu_spec("a100")
    with pytest.raises(ValueError, match="unknown matmul peak 'tf32'"):
        R.gpu_spec("t4", "tf32")
