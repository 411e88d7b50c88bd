"""Reading the scaling reports: tables by length, kernel rates, a layer against its kernel, crossover lengths,
attention's share of the step, and chapter 2's predicted share."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from . import cost

PUBLISHED_4K = pd.DataFrame(
    {"fwd": [321, 408, 476], "bwd": [279, 417, 453]}, index=["FlashAttention-2", "cuDNN", "FlashAttention-3"]
)
"""TFLOP/s on an H100 SXM5, head dim 64, N = 4k, non-causal, bf16 (FlashAttention-3 paper, Shah et al. 2024)."""


def load(path) -> dict:
    """A report written by ``python -m attnpaper scaling`` (kernels or model)."""
    report = json.loads(Path(path).read_text())
    if report.get("kind") not in ("scaling-kernels", "scaling-model"):
        raise ValueError(f"{path} is not a scaling report (kind {report.get('kind')!r})")
    return report


def runs(report) -> pd.DataFrame:
    """One row per process that measured part of a report: when, which commit, the lengths whose rows it
    holds (not those it was asked for: a later process may have replaced some, or this one failed), where."""
    entries = report.get("runs") or [report | {"lengths": sorted({r["seq_len"] for r in report["rows"]})}]
    held: dict = {}
    for r in report["rows"]:
        held.setdefault(r.get("run", 0), set()).add(r["seq_len"])
    return pd.DataFrame(
        [
            {
                "started": r["started"][:16].replace("T", " "),
                "commit": r["git_sha"][:7],
                "lengths": ", ".join(map(str, sorted(held.get(i, ())))),
                "device": r["versions"]["device"],
                "torch": r["versions"]["torch"],
                "CUDA": r["versions"].get("cuda"),
            }
            for i, r in enumerate(entries)
        ]
    )


def table(report, value, column, pass_=None, batch=None) -> pd.DataFrame:
    """``value`` of the rows with status ok, one row per length, one column per ``column`` (mechanism or variant).

    A model report holds rows at its constant tokens per batch and, at N <= 512, rows at the paper's
    batch: the first by default, the second with ``batch`` = that batch size (e.g. 32)."""
    tokens = report.get("tokens_per_batch")

    def wanted(r):
        if "tokens_per_batch" not in r:  # kernel rows, and model reports from before the paper's batch
            return batch is None
        return r["batch_size"] == batch if batch is not None else r["tokens_per_batch"] == tokens

    rows = [r for r in report["rows"] if r["status"] == "ok" and (pass_ is None or r["pass"] == pass_) and wanted(r)]
    df = pd.DataFrame(rows)
    return df.pivot_table(index="seq_len", columns=column, values=value, aggfunc="first").sort_index()


def crossover(a: pd.Series, b: pd.Series) -> int | None:
    """The shortest measured length from which ``a`` stays below ``b`` at every longer measured length.

    Lengths where only one side was measured (the other ran out of memory) count as wins for the
    measured side; None when ``a`` is not below ``b`` at the longest length.
    """
    lengths = sorted(set(a.index) | set(b.index))
    wins = [_lt(a.get(n), b.get(n)) for n in lengths]
    first = None
    for n, win in zip(lengths, wins):
        first = (first or n) if win else None
    return first


def first_at_least(series: pd.Series, threshold) -> int | None:
    """The shortest length at which ``series`` reaches ``threshold`` (None if it never does)."""
    hit = series[series >= threshold]
    return int(hit.index.min()) if len(hit) else None


def _lt(x, y) -> bool:
    x = math.inf if x is None or pd.isna(x) else x
    y = math.inf if y is None or pd.isna(y) else y
    return x < y


def predicted_share(lengths, shape=cost.DISTILBERT_BASE) -> pd.Series:
    """Chapter 2's cost model: the attention core's share of a layer's forward FLOPs at each length."""
    return pd.Series(
        {
            n: cost.attention_fraction(cost.layer_flops(n, shape["d_model"], shape["n_heads"], shape["d_ff"]))
            for n in lengths
        }
    )


def mechanism_status(report) -> pd.DataFrame:
    """Per mechanism of a kernels report: what runs, and how many rows ended in each status."""
    status = pd.DataFrame(report["rows"]).groupby("mechanism", sort=False)["status"]
    return pd.DataFrame(
        {
            "what runs": pd.Series(report["mechanisms"]),
            "rows": status.agg(lambda s: ", ".join(f"{k} {v}" for k, v in s.value_counts().items())),
        }
    )


def exact_rates(report, mechanisms, n, bwd_flops) -> pd.DataFrame:
    """TFLOP/s of exact kernels at length ``n``: forward and forward + backward as measured, backward
    derived (``bwd_flops``, the backward's FLOPs per call, over the difference of the two times),
    and forward + backward as a share of the report's measured matrix-product rate."""
    ms, fwd = table(report, "ms", "mechanism", "fwd_bwd"), table(report, "ms", "mechanism", "fwd")
    if n not in ms.index or n not in fwd.index:
        raise ValueError(f"length {n} not measured; measured: {', '.join(map(str, ms.index))}")
    tf = {p: table(report, "tflops", "mechanism", p) for p in ("fwd", "fwd_bwd")}
    bwd = {m: bwd_flops / ((ms.loc[n, m] - fwd.loc[n, m]) * 1e-3) / 1e12 for m in mechanisms}
    rates = pd.DataFrame(
        {
            "fwd": tf["fwd"].loc[n, mechanisms],
            "bwd (derived)": pd.Series(bwd),
            "fwd + bwd": tf["fwd_bwd"].loc[n, mechanisms],
        }
    )
    rates["fwd + bwd / matmul"] = rates["fwd + bwd"] / report["matmul_tflops"]
    return rates


def layer_vs_kernel(report, layer, kernel, min_len=0) -> pd.DataFrame:
    """Per length >= ``min_len``: ``layer``'s time over ``kernel``'s, forward and forward + backward,
    and the extra forward + backward milliseconds (a wrapper's overhead over the kernel it calls)."""
    fwd, fb = table(report, "ms", "mechanism", "fwd"), table(report, "ms", "mechanism", "fwd_bwd")
    for m in (layer, kernel):
        if m not in fb:
            raise ValueError(f"mechanism {m!r} not measured; measured: {', '.join(fb.columns)}")
    keep = fb.index[fb.index >= min_len]
    return pd.DataFrame(
        {
            "fwd": fwd.loc[keep, layer] / fwd.loc[keep, kernel],
            "fwd_bwd": fb.loc[keep, layer] / fb.loc[keep, kernel],
            "extra_ms": fb.loc[keep, layer] - fb.loc[keep, kernel],
        }
    )


def crossovers(ms: pd.DataFrame, mb: pd.DataFrame, exact, others) -> pd.DataFrame:
    """For each of ``others``: the crossover lengths (see :func:`crossover`) below the fastest and below
    the smallest of the ``exact`` mechanisms, and below 'eager', in time (``ms``) and memory (``mb``)."""
    best_t, best_m = ms[exact].min(axis=1), mb[exact].min(axis=1)
    return pd.DataFrame(
        {
            "time: below the fastest exact": {m: crossover(ms[m], best_t) for m in others},
            "time: below eager": {m: crossover(ms[m], ms["eager"]) for m in others},
            "memory: below the smallest exact": {m: crossover(mb[m], best_m) for m in others},
            "memory: below eager": {m: crossover(mb[m], mb["eager"]) for m in others},
        }
    )


def attention_share(report, variants=("sdpa", "flash")) -> pd.DataFrame:
    """Per length, the fused attention kernels' share of the training step's GPU busy time (only the
    variants whose attention kernels the profiler can name)."""
    attn = table(report, "attention_ms_per_step", "variant")
    busy = table(report, "gpu_busy_ms_per_step", "variant")
    return (attn / busy)[list(variants)]


def unrecorded(report) -> dict:
    """{variant: lengths} where the sweep (its constant tokens per batch) has no row of that variant while
    others have one: its process failed there. A run out of memory is recorded ('oom', then 'skipped')."""
    tokens = report.get("tokens_per_batch")
    rows = [r for r in report["rows"] if r.get("tokens_per_batch", tokens) == tokens]
    lengths = {r["seq_len"] for r in rows}
    have: dict = {}
    for r in rows:
        have.setdefault(r["variant"], set()).add(r["seq_len"])
    return {v: sorted(lengths - ns) for v, ns in have.items() if lengths - ns}


def without_tf32(report, variants=("linear", "hybrid")) -> list:
    """The ``variants`` whose GPU step rows ran float32 matmuls (FAVOR+'s w.x) without TF32, which training
    uses: rows that say so, and rows from before they said (f1312bb's sweep: its largest kernel there is
    an FP32 GEMM)."""
    return sorted(
        {
            r["variant"]
            for r in report["rows"]
            if r["status"] == "ok" and r["variant"] in variants and r.get("float32_matmuls", "ieee") != "tf32"
        }
    )


def step_crossovers(
    wall: pd.DataFrame, peak_mb: pd.DataFrame, exact=("baseline", "sdpa", "flash"), missing=None
) -> dict:
    """Crossover lengths of the whole training step (None where there is none), by name: flash below
    baseline and below sdpa, linear below baseline and below the fastest ``exact`` variant recorded at
    each length, the hybrid below that, and linear's peak memory below baseline's and below flash's.

    missing: ``unrecorded``'s {variant: lengths}; a comparison with a variant leaves out the lengths it has
    no row at (``crossover`` would count them as wins, as it does for a run out of memory)."""
    missing = missing or {}

    def at(frame, v, other):  # one side of a pair, at the lengths both sides were recorded
        drop = set(missing.get(v, ())) | set(missing.get(other, ()))
        return frame[v][~frame.index.isin(drop)]

    best = wall[list(exact)].min(axis=1)
    pairs = {
        "flash_baseline": (at(wall, "flash", "baseline"), at(wall, "baseline", "flash")),
        "flash_sdpa": (at(wall, "flash", "sdpa"), at(wall, "sdpa", "flash")),
        "linear_baseline": (at(wall, "linear", "baseline"), at(wall, "baseline", "linear")),
        "linear_exact": (wall["linear"], best),
        "hybrid_exact": (wall["hybrid"], best),
        "linear_mem_baseline": (at(peak_mb, "linear", "baseline"), at(peak_mb, "baseline", "linear")),
        "linear_mem_flash": (at(peak_mb, "linear", "flash"), at(peak_mb, "flash", "linear")),
    }
    return {name: crossover(a, b) for name, (a, b) in pairs.items()}
