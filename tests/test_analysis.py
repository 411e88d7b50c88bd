"""The chapters' analysis: step tables, results and memory tables, run notebooks, kernel rates and crossovers,
on small synthetic inputs with known answers and on the committed files under results/."""

import json
import math
import statistics
import warnings
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from helpers import campaign_plan

from attnpaper.analysis import notebook, scaling
from attnpaper.analysis.answer import LONG, PUBLISHED, bench_rows
from attnpaper.analysis.memory import gradients_from_weights, in_run_order, memory_parts, one_seed, seed_spread
from attnpaper.analysis.results import PAPER, accuracy_gain, load_records, paper_loss_points, results_table, summarise
from attnpaper.analysis.runs import executed_notebooks, kernel_table, layer_runs, run_setup
from attnpaper.analysis.steps import step_table

RESULTS = Path(__file__).resolve().parent.parent / "results"
H200 = RESULTS.parent / PUBLISHED  # the published campaign: one commit


def step_row(variant, n, wall, busy, peak, mode="eager", **extra):
    return {
        "variant": variant,
        "max_length": n,
        "step_mode": mode,
        "step_time_ms_median": wall,
        "gpu_busy_ms_per_step": busy,
        "peak_memory_mb": peak,
        **extra,
    }


# --- step tables -------------------------------------------------------------------------------------


def test_step_table_medians_maxima_and_ratios():
    rows = [
        step_row("baseline", 128, 10, 5, 100),
        step_row("baseline", 128, 14, 7, 120),
        step_row("baseline", 128, 30, 6, 90),  # median wall 14, busy 6; peak max 120
        step_row("flash", 128, 7, 3, 60),
        step_row("baseline", 512, 40, 20, 400),
        step_row("flash", 512, 20, 16, 100),
    ]
    t = step_table(rows, ["max_length", "variant"], ("wall_ms", "busy_ms", "peak_mb", "wall_over_busy"), ref="baseline")
    assert t.loc[(128, "baseline"), "wall_ms"] == 14 and t.loc[(128, "baseline"), "busy_ms"] == 6
    assert t.loc[(128, "baseline"), "peak_mb"] == 120
    assert t.loc[(128, "baseline"), "wall_over_busy"] == pytest.approx(14 / 6)
    assert t.loc[(128, "flash"), "wall_vs_baseline"] == pytest.approx(7 / 14)  # same length's baseline
    assert t.loc[(512, "flash"), "busy_vs_baseline"] == pytest.approx(16 / 20)
    assert t.loc[(512, "flash"), "mem_vs_baseline"] == pytest.approx(100 / 400)
    assert t.loc[(512, "baseline"), "wall_vs_baseline"] == 1
    assert list(t.columns) == [
        "wall_ms",
        "busy_ms",
        "peak_mb",
        "wall_over_busy",
        "wall_vs_baseline",
        "busy_vs_baseline",
        "mem_vs_baseline",
    ]


def test_step_table_one_key_and_no_gpu_time():
    rows = [step_row("baseline", 128, 10, 0.0, 100), step_row("flash", 128, 5, 0.0, 50)]
    t = step_table(rows, ["variant"], ("wall_ms", "busy_ms", "wall_over_busy"), ref="baseline")
    assert t["busy_ms"].isna().all() and t["wall_over_busy"].isna().all()  # a CPU: blank, not infinite
    assert t.loc["flash", "wall_vs_baseline"] == pytest.approx(0.5)


def test_step_table_reference_missing_in_one_group_is_blank():
    rows = [step_row("sdpa", 128, 10, 5, 100), step_row("flash", 128, 8, 4, 80), step_row("flash", 256, 9, 5, 90)]
    t = step_table(rows, ["max_length", "variant"], ref="sdpa")
    assert t.loc[(128, "flash"), "wall_vs_sdpa"] == pytest.approx(0.8)
    assert math.isnan(t.loc[(256, "flash"), "wall_vs_sdpa"])


def test_step_table_refuses_bad_arguments():
    rows = [step_row("flash", 128, 8, 4, 80)]
    with pytest.raises(ValueError, match="unknown step_table columns.*valid"):
        step_table(rows, ["variant"], ("wall_ms", "speed"))
    with pytest.raises(ValueError, match="reference variant 'baseline' not measured"):
        step_table(rows, ["variant"], ref="baseline")
    with pytest.raises(ValueError, match="needs 'variant'"):
        step_table(rows, ["max_length"], ref="flash")


def test_step_table_on_the_committed_step_benchmark():
    rows = bench_rows(H200 / "bench")
    t = step_table(
        rows, ["model", "max_length", "variant", "step_mode"], ("wall_ms", "syncs", "reserved_mb"), ref="sdpa"
    )
    for r in rows:  # one row per (model, length, variant, mode) here: the values themselves
        key = (r["model"], r["max_length"], r["variant"], r["step_mode"])
        same = [x for x in rows if (x["model"], x["max_length"], x["variant"], x["step_mode"]) == key]
        if len(same) == 1:
            assert t.loc[key, "wall_ms"] == r["step_time_ms_median"]
            assert t.loc[key, "reserved_mb"] == r["peak_reserved_mb"]
    sdpa = t.xs("sdpa", level="variant")["wall_vs_sdpa"]
    assert (sdpa == 1).all() and len(sdpa) >= 4


# --- results, memory, runs -------------------------------------------------------------------------


def record(variant, seed, acc, peak=1000.0, status="ok", config="c1", started="2026-01-01T00:00", **extra):
    return {
        "variant": variant,
        "seed": seed,
        "accuracy": acc,
        "status": status,
        "config_hash": config,
        "device": "GPU",
        "model": "m",
        "max_length": 128,
        "train_time_s": 100.0,
        "tokens_per_s": 1.0,
        "peak_memory_mb": peak,
        "started": started,
        "notes": {},
        **extra,
    }


def test_results_table_formats_and_paper_columns():
    recs = pd.DataFrame(
        [record("baseline", s, a) for s, a in enumerate([0.80, 0.82, 0.84])] + [record("sdpa", 0, 0.81, peak=900.4)]
    )
    table = results_table(summarise(recs).set_index("variant"))
    assert table.loc["baseline", "accuracy"] == "0.8200 ± 0.0200"
    assert table.loc["sdpa", "accuracy"] == "0.8100"  # one seed: no spread
    assert table.loc["baseline", "paper acc"] == f"{PAPER.loc['baseline', 'accuracy']:.3f}"
    assert table.loc["sdpa", "paper acc"] == "-" and table.loc["sdpa", "paper max MB"] == "-"
    assert table.loc["sdpa", "peak MB"] == 900 and table.loc["baseline", "train s (n)"] == "100.0 (3)"
    recs["train_time_excl_compile_s"] = recs["train_time_s"] - 40.0
    excl = results_table(summarise(recs).set_index("variant"), time="train_time_excl_compile_s")
    assert excl.loc["baseline", "train s excl. compile (n)"] == "60.0 (3)" and "train s (n)" not in excl
    with pytest.raises(ValueError, match="time column 'wall': valid are train_time_s, train_time_excl_compile_s"):
        results_table(summarise(recs).set_index("variant"), time="wall")


def test_results_table_on_the_committed_records():
    summary = summarise(load_records(H200)).set_index("variant")
    table = results_table(summary)
    _, variants, seeds = campaign_plan()["128", ""]  # the main runs: every variant, every planned seed
    assert table["seeds"].to_dict() == {v: len(seeds) for v in variants}
    assert (table["failed"] == 0).all()
    assert table.loc["linear", "paper train s"] == "206.5"


def test_paper_loss_points():
    loss = paper_loss_points()
    assert loss["baseline"] == 0
    assert loss["flash"] == pytest.approx(1.2) and loss["linear"] == pytest.approx(1.4)


def test_accuracy_gain_pairs_seeds_and_leaves_missing_blank():
    short = pd.DataFrame(
        [record("baseline", s, a) for s, a in enumerate([0.80, 0.82, 0.90])] + [record("flash", 0, 0.81)]
    )
    long = pd.DataFrame(
        [
            record("baseline", 0, 0.85),
            record("baseline", 1, 0.86),
            record("baseline", 5, 0.99),  # no seed 5 at the short length: not in the gain
            record("baseline", 2, 0.5, status="failed"),
        ]
    )
    g = accuracy_gain(short, long, ["baseline", "flash"])
    assert g.loc["baseline", "seeds at 128"] == 3 and g.loc["baseline", "seeds at 512"] == 3
    assert g.loc["baseline", "accuracy at 128"] == pytest.approx(0.84)
    assert g.loc["baseline", "512 - 128, points (same seeds)"] == pytest.approx(100 * (0.05 + 0.04) / 2)
    half = 12.706 * statistics.stdev([5.0, 4.0]) / math.sqrt(2)  # t(0.975, 1 df)
    assert g.loc["baseline", "512 - 128, points (same seeds), 95% CI low"] == pytest.approx(4.5 - half, rel=1e-3)
    assert g.loc["baseline", "512 - 128, points (same seeds), 95% CI high"] == pytest.approx(4.5 + half, rel=1e-3)
    assert g.loc["flash", "seeds at 512"] == 0
    assert math.isnan(g.loc["flash", "accuracy at 512"])
    assert math.isnan(g.loc["flash", "512 - 128, points (same seeds)"])


def test_accuracy_gain_on_the_committed_records():
    """The H200 runs at 512 tokens against the same seeds at 128: one commit, and the gain is real."""
    long = load_records(H200 / LONG)
    short = load_records(H200)
    short = short[short.seed.isin(set(long.seed))]
    assert set(long.git_sha) == set(short.git_sha) and long.git_sha.nunique() == 1
    g = accuracy_gain(short, long, ["baseline", "linear"])
    planned = len(campaign_plan()["512", ""][2])  # the seeds run at 512 tokens
    assert (g["seeds at 128"] == planned).all() and (g["seeds at 512"] == planned).all()
    assert 0.8 < g.loc["baseline", "accuracy at 512"] < 1
    assert (g["512 - 128, points (same seeds), 95% CI low"] > 0).all()


def test_memory_parts_add_up_to_the_peak():
    recs = pd.DataFrame(
        [
            record("baseline", 0, 0.8, peak=1000.0, weights_mb=100.0, optimizer_mb=200.0),
            record("flash", 0, 0.8, peak=700.0, weights_mb=100.0, optimizer_mb=200.0),
            record("flash", 1, 0.8, peak=9999.0, weights_mb=100.0, optimizer_mb=200.0),
        ]
    )
    parts = memory_parts(recs, ["flash", "baseline"])
    assert list(parts.index) == ["flash", "baseline"]
    assert parts.loc["flash"].tolist() == [100.0, 100.0, 200.0, 300.0]
    assert parts.sum(axis=1).tolist() == [700.0, 1000.0]
    with pytest.raises(ValueError, match="no successful seed-0 run of linear"):
        memory_parts(recs, ["linear"])


def test_seed_spread_and_run_order():
    recs = pd.DataFrame(
        [
            record("a", 0, 0.8, peak=10.0, started="2026-01-03"),
            record("a", 1, 0.8, peak=13.5, started="2026-01-01"),
            record("b", 0, 0.8, peak=7.0, started="2026-01-02"),
        ]
    )
    assert seed_spread(recs).to_dict() == {"a": 3.5, "b": 0.0}
    ordered = in_run_order(recs)
    assert ordered["peak_memory_mb"].tolist() == [13.5, 7.0, 10.0] and list(ordered.index) == [0, 1, 2]


def test_committed_memory_does_not_creep():
    recs = load_records(H200)
    assert seed_spread(recs).max() < 50  # MB: the chapter's claim that peaks do not grow in run order
    parts = memory_parts(recs, ["baseline", "linear"])
    assert (parts > 0).all().all()


def test_run_setup_describes_one_configuration():
    recs = load_records(H200)
    setup = run_setup(recs)
    raw = [json.loads(p.read_text()) for p in sorted((H200 / "records").glob("*.json"))]
    assert setup["config hash"] == raw[0]["config_hash"]
    assert setup["device"] == raw[0]["device"]
    assert setup["max_length / batch / epochs"].startswith(f"{raw[0]['max_length']} / {raw[0]['batch_size']}")
    two = recs.assign(config_hash=["x"] + ["y"] * (len(recs) - 1))
    with pytest.raises(ValueError, match="2 configurations"):
        run_setup(two)
    with pytest.raises(ValueError, match="1 failed"):
        run_setup(recs.assign(status=["failed"] + ["ok"] * (len(recs) - 1)))


def test_executed_notebooks(tmp_path):
    nbs = executed_notebooks(H200 / "notebooks")
    recs = load_records(H200)
    assert len(nbs) == len(recs)
    assert sorted(zip(nbs["variant"], nbs["seed"])) == sorted(zip(recs["variant"], recs["seed"]))
    assert (nbs["wall s"] > 0).all() and set(nbs["concurrent"]) == {1}  # the campaign's runs were solo
    with pytest.raises(ValueError, match="no executed notebooks"):
        executed_notebooks(tmp_path)
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "plain.ipynb")
    with pytest.raises(ValueError, match="plain.ipynb was not executed by papermill"):
        executed_notebooks(tmp_path)


def test_layer_runs():
    assert (
        layer_runs([["a"], ["a"], ["a"], ["b", "c"], ["b", "c"], ["a"]])
        == "layers 0-2: a; layers 3-4: b, c; layers 5: a"
    )
    assert layer_runs([["x"]]) == "layers 0: x"
    assert layer_runs([]) == ""


# --- kernels and the training step at length -------------------------------------------------------


def kernels_report():
    """Two lengths, an exact kernel, a wrapper around it, a linear one, eager softmax."""
    rows = []
    ms = {
        ("eager", 128): (1.0, 3.0),
        ("eager", 256): (2.0, 6.0),
        ("exact", 128): (0.5, 1.5),
        ("exact", 256): (1.0, 3.5),
        ("wrap", 128): (0.6, 2.0),
        ("wrap", 256): (1.1, 3.6),
        ("lin", 128): (0.8, 2.0),
        ("lin", 256): (0.8, 2.0),
    }
    mb = {
        "eager": {128: 100, 256: 200},
        "exact": {128: 10, 256: 10},
        "wrap": {128: 12, 256: 12},
        "lin": {128: 30, 256: 30},
    }
    for (m, n), (f, fb) in ms.items():
        for p, t in (("fwd", f), ("fwd_bwd", fb)):
            rows.append(
                {
                    "mechanism": m,
                    "seq_len": n,
                    "pass": p,
                    "ms": t,
                    "tflops": 100 / t,
                    "peak_mb": mb[m][n],
                    "status": "ok",
                }
            )
    rows.append({"mechanism": "missing", "seq_len": 128, "pass": "fwd", "status": "unavailable"})
    return {
        "kind": "scaling-kernels",
        "matmul_tflops": 400.0,
        "rows": rows,
        "mechanisms": {"eager": "e", "exact": "x", "wrap": "w", "lin": "l", "missing": "m"},
    }


def test_mechanism_status():
    st = scaling.mechanism_status(kernels_report())
    assert st.loc["exact", "rows"] == "ok 4" and st.loc["missing", "rows"] == "unavailable 1"
    assert st.loc["wrap", "what runs"] == "w"
    committed = scaling.mechanism_status(scaling.load(H200 / "scaling-kernels.json"))
    assert committed.loc["flash-attn", "rows"].startswith("unavailable")


def test_exact_rates():
    rates = scaling.exact_rates(kernels_report(), ["exact", "eager"], 256, bwd_flops=5e9)
    # backward: 5e9 FLOPs over (3.5 - 1.0) ms = 2 TFLOP/s
    assert rates.loc["exact", "bwd (derived)"] == pytest.approx(2.0)
    assert rates.loc["eager", "fwd"] == pytest.approx(100 / 2.0)
    assert rates.loc["exact", "fwd + bwd / matmul"] == pytest.approx(100 / 3.5 / 400)
    with pytest.raises(ValueError, match="length 999 not measured"):
        scaling.exact_rates(kernels_report(), ["exact"], 999, bwd_flops=1)


def test_layer_vs_kernel():
    w = scaling.layer_vs_kernel(kernels_report(), "wrap", "exact", min_len=200)
    assert list(w.index) == [256]
    assert w.loc[256, "fwd"] == pytest.approx(1.1) and w.loc[256, "fwd_bwd"] == pytest.approx(3.6 / 3.5)
    assert w.loc[256, "extra_ms"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="mechanism 'nope' not measured"):
        scaling.layer_vs_kernel(kernels_report(), "nope", "exact")


def test_crossovers():
    r = kernels_report()
    ms, mb = scaling.table(r, "ms", "mechanism", "fwd_bwd"), scaling.table(r, "peak_mb", "mechanism", "fwd_bwd")
    c = scaling.crossovers(ms, mb, ["eager", "exact"], ["lin"])
    assert c.loc["lin", "time: below eager"] == 128  # 2.0 < 3.0 and 2.0 < 6.0
    assert c.loc["lin", "time: below the fastest exact"] == 256  # 2.0 > 1.5, then 2.0 < 3.5
    assert pd.isna(c.loc["lin", "memory: below the smallest exact"])  # 30 > 10 everywhere
    assert c.loc["lin", "memory: below eager"] == 128


def test_attention_share_on_the_committed_step():
    step = scaling.load(H200 / "scaling-model.json")
    share = scaling.attention_share(step)
    assert list(share.columns) == ["sdpa", "flash"]
    measured = share.stack().dropna()
    assert ((measured > 0) & (measured < 1)).all()
    recorded = sorted({r["seq_len"] for r in step["rows"]} - set(scaling.unrecorded(step).get("sdpa", [])))
    assert share["sdpa"].dropna().index.tolist() == recorded  # a share wherever sdpa's step has a row
    assert share["flash"].is_monotonic_increasing  # attention's share grows with N
    synthetic = {
        "rows": [
            {"seq_len": n, "variant": v, "status": "ok", "attention_ms_per_step": a, "gpu_busy_ms_per_step": b}
            for n, v, a, b in ((128, "sdpa", 1, 10), (128, "flash", 2, 8), (256, "sdpa", 6, 12), (256, "flash", 3, 6))
        ]
    }
    s = scaling.attention_share(synthetic)
    assert s.loc[128, "sdpa"] == pytest.approx(0.1) and s.loc[256, "flash"] == pytest.approx(0.5)


# --- notebooks ------------------------------------------------------------------------------------


def test_quiet_hides_only_the_known_notice():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        notebook.quiet()
        warnings.warn("IProgress not found. Please update jupyter and ipywidgets.", stacklevel=1)
        warnings.warn("something else", stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else"]


def test_glue_all_glues_each_value_without_display(monkeypatch):
    import myst_nb

    calls = []
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=True: calls.append((name, value, display)))
    notebook.glue_all({"a": 1, "b": 2.5})
    assert calls == [("a", 1, False), ("b", 2.5, False)]


def test_step_crossovers():
    n = [128, 256, 512, 1024]
    wall = pd.DataFrame(
        {
            "baseline": [10, 20, 40, 80],
            "sdpa": [9, 15, 30, 60],
            "flash": [8, 16, 29, 59],
            "linear": [30, 30, 30, 30],
            "hybrid": [20, 22, 31, 45],
        },
        index=n,
    )
    peak = pd.DataFrame(
        {"baseline": [100, 200, 400, 800], "flash": [50, 60, 70, 80], "linear": [300, 300, 300, 300]}, index=n
    )
    mx = scaling.step_crossovers(wall, peak)
    assert mx["flash_baseline"] == 128 and mx["flash_sdpa"] == 512  # 16 > 15 at 256, then below
    assert mx["linear_baseline"] == 512 and mx["linear_exact"] == 1024  # 30 > 29 at 512
    assert mx["hybrid_exact"] == 1024 and mx["linear_mem_baseline"] == 512
    assert mx["linear_mem_flash"] is None


def test_memory_parts_use_recorded_gradients_where_there_are_any():
    recs = pd.DataFrame(
        [
            record("a", 0, 0.8, peak=1000.0, weights_mb=100.0, gradients_mb=0.0, optimizer_mb=200.0),
            record("b", 0, 0.8, peak=1000.0, weights_mb=100.0, gradients_mb=60.0, optimizer_mb=200.0),
        ]
    )
    parts = memory_parts(recs, ["a", "b"])
    assert parts["gradients"].tolist() == [100.0, 60.0]  # a: no figure recorded, one buffer per weight
    assert gradients_from_weights(one_seed(recs, ["a", "b"])).tolist() == [True, False]
    assert gradients_from_weights(one_seed(recs.drop(columns="gradients_mb"), ["a"])).tolist() == [True]


def test_kernel_table_names_every_layer_run_in_full():
    long = "sdpa FLASH_ATTENTION (FA2), torch.varlen_attn (FA2)"
    t = kernel_table({"hybrid": [long.split(", ")] * 3 + [["linear favor+ (M=111)"]] * 3, "base": [["eager"]]})
    assert t.index.tolist() == [("hybrid", "0-2"), ("hybrid", "3-5"), ("base", "0")]
    assert t["kernels"].tolist() == [long, "linear favor+ (M=111)", "eager"]
    assert kernel_table({}).empty


def test_readable_renames_columns_and_index_levels():
    readable = notebook.readable
    df = pd.DataFrame({"seq_len": [128], "variant": ["flash"], "wall_ms": [1.0], "x": [2]}).set_index(
        ["seq_len", "variant"]
    )
    out = readable(df, x="the x")
    assert list(out.columns) == ["wall time (ms)", "the x"]
    assert list(out.index.names) == ["N (tokens)", "variant"]
    assert list(df.columns) == ["wall_ms", "x"]  # the input is left as it was


def test_readable_number():
    shown = [notebook.readable_number(x) for x in (2720.3, 453.1, 0.013456, 2.615895e-07, 0.0, 999.7, -1.662128)]
    assert shown == ["2,720", "453", "0.0135", "2.62e-07", "0", "1,000", "-1.66"]
    assert notebook.readable_number(float("nan")) == "nan"


def test_step_crossovers_leave_out_lengths_a_variant_has_no_row_at():
    """A variant whose step has no row at the long lengths (its process failed) is compared only where it
    was recorded; counting its absence as the other side's win would invent a crossover."""
    n = [128, 256, 512, 1024, 2048]
    wall = pd.DataFrame(
        {
            "baseline": [10, 20, 40, 80, 160],
            "sdpa": [9, 15, 30, None, None],
            "flash": [8, 16, 31, 59, 100],
            "linear": [30, 30, 30, 30, 30],
            "hybrid": [20, 22, 31, 45, 60],
        },
        index=n,
    )
    peak = pd.DataFrame({"baseline": [1] * 5, "flash": [1] * 5, "linear": [2] * 5}, index=n)
    assert scaling.step_crossovers(wall, peak)["flash_sdpa"] == 1024  # absence read as flash winning
    mx = scaling.step_crossovers(wall, peak, missing={"sdpa": [1024, 2048]})
    assert mx["flash_sdpa"] is None  # 31 > 30 at 512, the last length sdpa ran
    assert mx["linear_exact"] == 1024 and mx["flash_baseline"] == 128


def test_unrecorded_names_lengths_a_variant_has_no_row_at():
    rows = [
        {"variant": v, "seq_len": n, "batch_size": 16384 // n, "tokens_per_batch": 16384, "status": s}
        for v, n, s in [("a", 512, "ok"), ("a", 1024, "ok"), ("b", 512, "ok"), ("c", 512, "oom")]
        + [("c", 1024, "skipped")]
    ]
    rows.append({"variant": "b", "seq_len": 128, "batch_size": 32, "tokens_per_batch": 4096, "status": "ok"})
    report = {"kind": "scaling-model", "tokens_per_batch": 16384, "rows": rows}
    assert scaling.unrecorded(report) == {"b": [1024]}  # c ran out of memory: recorded


def test_runs_give_the_lengths_each_process_holds():
    """A process asked for 128-1024 whose 1024 rows a later one replaced holds 128 and 512 only."""
    run = {"started": "2026-12-02T05:14:44", "git_sha": "f1312bb", "versions": {"device": "H200", "torch": "2"}}
    report = {
        "runs": [run | {"lengths": [128, 512, 1024]}, run | {"lengths": [1024]}],
        "rows": [{"seq_len": n, "run": i} for n, i in ((128, 0), (512, 0), (1024, 1))],
    }
    assert scaling.runs(report)["lengths"].tolist() == ["128, 512", "1024"]
