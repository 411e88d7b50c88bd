"""Chapter 2's roofline applied op by op to a profiled training step: a predicted step time per variant on a GPU.

The input is an op profile (``python -m attnpaper profile-ops``, attnpaper/bench/op_profile.py): for each
variant, rows of (phase, aten op, input shapes) with their calls, FLOPs, bytes and elements over
``steps`` counted eager training steps. Each row is timed as :func:`cost.roofline_time` does, with
time = max(FLOPs / peak, bytes / bandwidth), and the rows are summed: a lower bound on the GPU time of an
eager step whose kernels run one after another, each reading its inputs from and writing its outputs to
HBM (no fusion, no caching between kernels). Choices, each an argument:

* **Matrix products** (the rows with FLOPs from torch's ``FlopCounterMode``: mm, addmm, bmm, SDPA and
  FlashAttention kernels) run at the tensor-core peak of ``cost.GPUS`` (``matmul="tensor"``: fp16 or bf16
  operands), or at the CUDA cores' fp32 peak (``matmul="cuda-core"``: fp32 operands on a GPU without TF32,
  such as the T4, a Turing card).
* **Everything else** (elementwise ops, reductions, softmax, layer norm, AdamW, copies) has no FLOP formula
  in torch. It is charged ``elementwise_flops`` FLOPs per element of its largest operand at the CUDA
  cores' fp32 peak (``cost.CUDA_CORE_FLOPS``; autocast computes such ops in fp32). The default, 0, makes
  these ops memory-bound by construction; :func:`predict_variant` reports the smallest FLOPs per element
  that would make any of them compute-bound (``elementwise_breakeven``), so the choice can be judged.
* **Kernel launches**: an eager step issues one kernel per op call that is not a view or an allocation
  (an approximation: some ops launch several kernels, foreach ops one per group of tensors). At
  ``launch_s`` seconds of host time per launch, the launches take ``launches * launch_s``; the host and
  the GPU overlap, so the step takes at least the larger of that and the roofline time
  (``with_launch_s``) and at most their sum (``serial_s``). ``launch_breakeven_us`` is the host time per
  launch at which the two are equal: above it an eager step on this GPU is launch-bound.

Pure Python (no torch): the tests feed it synthetic profiles.
"""

from __future__ import annotations

import math

from . import cost

PHASES = ("forward", "backward", "optimizer")
"""The parts of a training step a profile's rows belong to, in the order the step runs them."""

MATMUL_PEAKS = ("tensor", "cuda-core")
"""Where matrix products run: tensor cores (16-bit operands) or CUDA cores (fp32 operands without TF32)."""

GPU_ALIASES = {"t4": "T4 (fp16 tensor core)", "h200": "H200 SXM (bf16 dense)"}
"""Short names the command line takes for the GPUs of ``cost.GPUS``."""

IMDB_TRAIN_REVIEWS = 25_000
"""Reviews in IMDb's train split (stanfordnlp/imdb), which the paper trained on."""

PROFILE_KIND = "op-profile"
"""The ``kind`` of an op profile's JSON: what :func:`check_profile` asks for."""


def gpu_spec(gpu: str, matmul: str = "tensor") -> dict:
    """Peaks of ``gpu`` (a key of cost.GPUS or an alias of GPU_ALIASES): FLOP/s for matrix products and for
    other ops, bytes/s of HBM. ValueError in one line for an unknown GPU or matmul peak."""
    name = GPU_ALIASES.get(gpu, gpu)
    if name not in cost.GPUS:
        valid = ", ".join([*GPU_ALIASES, *cost.GPUS])
        raise ValueError(f"unknown GPU {gpu!r}; valid: {valid}")
    if matmul not in MATMUL_PEAKS:
        raise ValueError(f"unknown matmul peak {matmul!r}; valid: {', '.join(MATMUL_PEAKS)}")
    other = cost.CUDA_CORE_FLOPS[name]
    return {
        "name": name,
        "matmul": matmul,
        "matmul_flops": cost.GPUS[name]["peak_flops"] if matmul == "tensor" else other,
        "other_flops": other,
        "bandwidth": cost.GPUS[name]["bandwidth"],
    }


def row_time(row: dict, spec: dict, elementwise_flops: float = 0.0) -> dict:
    """One profile row on ``spec``: its compute and memory times, the larger (its roofline time) and which
    bound it; ``matmul`` when torch counted FLOPs for it. A row that launches no kernel (a view or an
    allocation) takes no time."""
    matmul = row["flops"] > 0
    if not row["kernel"]:
        return {"matmul": matmul, "compute_s": 0.0, "memory_s": 0.0, "time_s": 0.0, "bound": None}
    flops = row["flops"] if matmul else elementwise_flops * row["elements"]
    compute = flops / (spec["matmul_flops"] if matmul else spec["other_flops"])
    memory = row["bytes"] / spec["bandwidth"]
    return {
        "matmul": matmul,
        "compute_s": compute,
        "memory_s": memory,
        "time_s": max(compute, memory),
        "bound": "compute" if compute > memory else "memory",
    }


def _breakeven(rows, spec) -> float | None:
    """The fewest FLOPs per element at which some non-matmul kernel row would be compute-bound on ``spec``."""
    ks = [
        r["bytes"] / spec["bandwidth"] * spec["other_flops"] / r["elements"]
        for r in rows
        if r["kernel"] and r["flops"] == 0 and r["elements"] > 0
    ]
    return min(ks) if ks else None


def predict_variant(rows, steps: int, spec: dict, elementwise_flops: float = 0.0, launch_s: float = 0.0) -> dict:
    """Per training step, from ``rows`` counted over ``steps`` steps: the roofline time (``step_s``), its
    compute-bound and memory-bound shares, the matrix products' share and their time at the peak alone
    (``matmul_compute_s``: the step if it were purely matmul-bound), time by phase, FLOPs, bytes, kernel
    launches, and with launches of ``launch_s`` each the overlapped and serial bounds (module doc)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    times = [(r, row_time(r, spec, elementwise_flops)) for r in rows]
    total = sum(t["time_s"] for _, t in times)
    launches = sum(r["calls"] for r in rows if r["kernel"]) / steps
    step = total / steps
    launch = launches * launch_s

    def share(pick):
        return sum(t["time_s"] for r, t in times if pick(r, t)) / total if total else 0.0

    return {
        "step_s": step,
        "compute_bound_share": share(lambda r, t: t["bound"] == "compute"),
        "memory_bound_share": share(lambda r, t: t["bound"] == "memory"),
        "matmul_share": share(lambda r, t: t["matmul"]),
        "matmul_compute_s": sum(t["compute_s"] for _, t in times if t["matmul"]) / steps,
        "phase_s": {p: sum(t["time_s"] for r, t in times if r["phase"] == p) / steps for p in PHASES},
        "matmul_flops": sum(r["flops"] for r in rows) / steps,
        "bytes": sum(r["bytes"] for r in rows if r["kernel"]) / steps,
        "launches": launches,
        "launch_s": launch,
        "with_launch_s": max(step, launch),
        "serial_s": step + launch,
        "launch_breakeven_us": 1e6 * step / launches if launches else None,
        "elementwise_breakeven": _breakeven(rows, spec),
    }


def spread(values: dict) -> dict:
    """max / min of ``values`` (variant -> a positive time) and which variants give them."""
    if not values or min(values.values()) <= 0:
        raise ValueError("spread needs at least one variant with a positive time")
    hi, lo = max(values, key=values.get), min(values, key=values.get)
    return {"ratio": values[hi] / values[lo], "max": hi, "min": lo}


def check_profile(profile) -> dict:
    """``profile`` is an op profile (its kind, variants with rows and steps): ValueError in one line if not."""
    if not isinstance(profile, dict) or profile.get("kind") != PROFILE_KIND:
        raise ValueError(f"not an op profile (JSON with kind {PROFILE_KIND!r}, as profile-ops writes)")
    variants = profile.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise ValueError("the op profile holds no variants")
    keys = {"phase", "op", "calls", "flops", "bytes", "elements", "kernel"}
    for name, v in variants.items():
        if not isinstance(v, dict) or not isinstance(v.get("rows"), list) or not v.get("steps"):
            raise ValueError(f"the op profile's variant {name!r} has no rows or no steps")
        bad = [r for r in v["rows"] if not isinstance(r, dict) or not keys <= set(r)]
        if bad:
            raise ValueError(f"the op profile's variant {name!r} has rows without {', '.join(sorted(keys))}")
    return profile


def predict(profile: dict, gpu: str = "t4", matmul: str = "tensor", elementwise_flops=0.0, launch_s=0.0) -> dict:
    """Every variant of an op profile on ``gpu`` (:func:`predict_variant`), and the spread across them of
    the roofline step, of the matmul-bound step, and of the step with launches."""
    check_profile(profile)
    spec = gpu_spec(gpu, matmul)
    out = {
        v: predict_variant(p["rows"], p["steps"], spec, elementwise_flops, launch_s)
        for v, p in profile["variants"].items()
    }
    spreads = {
        key: spread({v: o[key] for v, o in out.items()})
        for key in ("step_s", "matmul_compute_s", *(("with_launch_s",) if launch_s else ()))
        if all(o[key] > 0 for o in out.values())
    }
    return {
        "gpu": spec,
        "elementwise_flops": elementwise_flops,
        "launch_us": launch_s * 1e6,
        "variants": out,
        "spread": spreads,
    }


def by_op(rows, steps: int = 1) -> list[dict]:
    """One row per op name, summed over phases and shapes, per step: calls, FLOPs, bytes; most bytes first."""
    ops: dict = {}
    for r in rows:
        o = ops.setdefault(r["op"], {"op": r["op"], "calls": 0, "flops": 0, "bytes": 0, "kernel": r["kernel"]})
        o["calls"] += r["calls"] / steps
        o["flops"] += r["flops"] / steps
        o["bytes"] += r["bytes"] / steps
    return sorted(ops.values(), key=lambda o: (-o["bytes"], -o["flops"], o["op"]))


def paper_step_s(train_time_s: float, batch_size: int = 32, epochs: int = 3, reviews: int = IMDB_TRAIN_REVIEWS):
    """Seconds per step of a paper's training time, had every second gone to its training steps:
    ``train_time_s`` over epochs x ceil(reviews / batch_size) steps (the paper's 3 epochs at batch 32)."""
    return train_time_s / (epochs * math.ceil(reviews / batch_size))


def format_prediction(pred: dict, paper_step_s: dict | None = None) -> str:
    """The prediction as a text table, a variant a line, then the spreads (and the paper's step, if given)."""
    g = pred["gpu"]
    lines = [
        f"{g['name']}: matmuls at {g['matmul_flops'] / 1e12:.1f} TFLOP/s ({g['matmul']}), other ops at "
        f"{g['other_flops'] / 1e12:.1f} TFLOP/s x {pred['elementwise_flops']:g} FLOP/element, "
        f"{g['bandwidth'] / 1e9:.0f} GB/s; launches at {pred['launch_us']:g} us",
        f"{'variant':9s} {'step ms':>8s} {'compute':>8s} {'memory':>7s} {'matmul':>7s} {'mm-only':>8s} "
        f"{'GFLOP':>7s} {'GB':>6s} {'launches':>8s} {'+launch':>8s} {'b/e us':>7s}",
    ]
    for v, o in pred["variants"].items():
        be = o["launch_breakeven_us"]
        lines.append(
            f"{v:9s} {1e3 * o['step_s']:8.2f} {o['compute_bound_share']:8.0%} {o['memory_bound_share']:7.0%} "
            f"{o['matmul_share']:7.0%} {1e3 * o['matmul_compute_s']:8.2f} {o['matmul_flops'] / 1e9:7.1f} "
            f"{o['bytes'] / 1e9:6.2f} {o['launches']:8.0f} {1e3 * o['with_launch_s']:8.2f} "
            f"{'-' if be is None else f'{be:.2f}':>7s}"
        )
    for key, label in (("step_s", "roofline step"), ("matmul_compute_s", "matmul-only"), ("with_launch_s", "+launch")):
        s = pred["spread"].get(key)
        if s:
            lines.append(f"spread, {label}: max/min {s['ratio']:.3f} ({s['max']} / {s['min']})")
    lines.append(
        "compute, memory: shares of the step in compute- and memory-bound ops; matmul: its share in matrix "
        "products; mm-only: their FLOPs at the peak alone; +launch: max(step, launches x launch cost); b/e: "
        "the launch cost at which the launches take the step's time"
    )
    if paper_step_s:
        said = ", ".join(f"{v} {1e3 * s:.1f}" for v, s in paper_step_s.items())
        lines.append(f"the paper's ms per step (train time / steps): {said}")
    return "\n".join(lines)
