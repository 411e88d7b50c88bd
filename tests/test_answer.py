"""The answer box's numbers (analysis/answer.py), from a results folder built here."""

import json
import math
import statistics

import pytest
from helpers import make_record

from attnpaper.analysis import answer as A
from attnpaper.analysis.answer import PUBLISHED
from attnpaper.experiment.records import write_record

ACC = {"baseline": [0.870, 0.872, 0.868], "flash": [0.871, 0.870, 0.869], "linear": [0.82, 0.821, 0.818]}
TIME = {"baseline": [10.0, 10.2, 9.8], "flash": [6.0, 6.3, 5.9], "linear": [12.0, 12.1, 11.7]}
MEM = {"baseline": 1000.0, "flash": 800.0, "linear": 1600.0}


def records(folder, acc=ACC, config_hash="aaaaaaaaaaaa"):
    for v, accs in acc.items():
        for s, a in enumerate(accs):
            rec = make_record(v, s, a, config_hash=config_hash, peak_memory_mb=MEM[v])
            rec["train_time_excl_compile_s"] = TIME[v][s]
            write_record(rec, folder / "records" / f"{v}_seed{s}_{config_hash}.json")


@pytest.fixture
def root(tmp_path):
    records(tmp_path)
    return tmp_path


def test_effects_pair_accuracy_time_and_memory_over_seeds(root):
    out = A.load(root)
    assert out["n_seeds"] == 3 and set(out) == {"effects", "n_seeds", "setup", "baseline"}  # nothing else measured
    assert out["setup"]["git_sha"] == "abc" and out["setup"]["step_mode"] == "not recorded"
    flash = out["effects"].loc["flash"]
    assert flash["pairs"] == 3
    assert flash["acc_pts"] == pytest.approx(
        100 * statistics.mean(f - b for f, b in zip(ACC["flash"], ACC["baseline"]))
    )
    logs = [math.log(f / b) for f, b in zip(TIME["flash"], TIME["baseline"])]
    assert flash["time_ratio"] == pytest.approx(math.exp(statistics.mean(logs)))
    assert flash["time_low"] < flash["time_ratio"] < flash["time_high"]
    assert flash["mem_ratio"] == pytest.approx(0.8)


def test_two_configurations_are_refused(root):
    records(root, {"baseline": [0.5]}, config_hash="bbbbbbbbbbbb")
    with pytest.raises(ValueError, match="records of 2 configurations/devices; the answer pairs within one"):
        A.load(root)


def test_accuracy_arms_beside_the_papers_setup(root):
    arm = root / "artefacts" / "fp16"
    records(arm, {"baseline": [0.860, 0.862, 0.858], "flash": [0.871, 0.870, 0.869]}, "cccccccccccc")
    drop = root / "artefacts" / "dropout"
    records(drop, {"baseline": [0.880, 0.882, 0.878]}, "dddddddddddd")
    out = A.load(root)
    fp16, dropout = out["fp16"], out["dropout"]
    assert fp16["baseline_change_pts"] == pytest.approx(-1.0) and fp16["baseline_change_pairs"] == 3
    assert fp16["flash_minus_baseline_arm_pts"] == pytest.approx(1.0)
    assert fp16["flash_minus_baseline_main_pts"] == pytest.approx(0.0)
    assert fp16["flash_minus_baseline_arm_low"] < 1.0 < fp16["flash_minus_baseline_arm_high"]
    assert fp16["largest_move_pts"] == pytest.approx(1.0)  # the main runs' own difference is not a move
    assert dropout["flash_minus_arm_baseline_pts"] == pytest.approx(-1.0)  # flash as run, baseline with dropout
    assert "flash_minus_baseline_arm_pts" not in dropout  # the arm ran the baseline only


def test_an_arm_is_compared_over_its_own_seeds(root):
    """An arm of fewer seeds than the main runs is set against the main runs of those seeds only."""
    records(root / "artefacts" / "fp16", {"baseline": [0.870, 0.872]}, "cccccccccccc")
    fp16 = A.load(root)["fp16"]
    main = [f - b for f, b in zip(ACC["flash"][:2], ACC["baseline"][:2])]
    assert fp16["flash_minus_baseline_main_pairs"] == 2
    assert fp16["flash_minus_baseline_main_pts"] == pytest.approx(100 * statistics.mean(main))
    assert fp16["baseline_change_pts"] == pytest.approx(0.0) and fp16["baseline_change_pairs"] == 2


def test_the_box_says_how_far_each_arm_moved_accuracy(root):
    """With both arms run, the box states the largest move, and whether it explains the paper's flash loss
    follows the numbers."""
    from attnpaper.analysis import box

    records(root / "artefacts" / "fp16", {"baseline": [0.871, 0.873, 0.869]}, "cccccccccccc")
    records(root / "artefacts" / "dropout", {"baseline": [0.869, 0.871, 0.867]}, "dddddddddddd")
    html = box.render(A.load(root))
    assert "moves it by at most 0.10 points" in html and "not by these; the cause is open" in html
    assert "the arms are not yet run at this commit" not in html
    records(root / "artefacts" / "dropout", {"baseline": [0.882, 0.884, 0.880]}, "dddddddddddd")
    html = box.render(A.load(root))
    assert "at most 1.20 points" in html and "possibly: an arm moves it by half or more" in html


def test_memory_artefact_growth_against_the_papers_steps(root):
    rows = [
        {"arm": "kept", "variant": v, "peak_memory_mb": p, "growth_mb": g}
        for v, p, g in zip(A.PAPER_ORDER, [1000, 2100, 3300, 4400], [1000, 1100, 1200, 1100])
    ] + [{"arm": "fresh", "variant": v, "peak_memory_mb": p} for v, p in zip(A.PAPER_ORDER, [1000, 900, 1500, 1200])]
    (root / "artefacts").mkdir()
    (root / "artefacts" / "paper-memory.json").write_text(json.dumps({"rows": rows}))
    mem = A.load(root)["memory"]
    assert mem["kept_growth_mb"] == pytest.approx(1133.33, abs=0.01)
    assert mem["paper_growth_mb"] == pytest.approx((2993 - 1424) / 3)  # the paper's ~520 MB steps
    assert mem["fresh_spread"] == pytest.approx(1500 / 900)


def test_step_ratios_spread_and_the_stock_row():
    def row(v, mode, wall, busy=None, peak=1000.0, model="m", n=128):
        return {
            "variant": v,
            "step_mode": mode,
            "model": model,
            "max_length": n,
            "step_time_ms_median": wall,
            "gpu_busy_ms_per_step": busy or wall,
            "peak_memory_mb": peak,
        }

    rows = [row(v, "whole", w) for v, w in zip(A.PAPER_ORDER, [4.0, 3.0, 6.0, 5.0])]
    rows += [row(v, "eager", w) for v, w in zip(A.PAPER_ORDER, [16.0, 15.0, 17.0, 16.0])]
    rows += [row("transformers", "reduce-overhead", 5.0, 4.0), row("flash", "whole", 1.0, n=512)]
    t = A.step_ratios(rows, "m", 128)
    assert t.loc["flash", "wall_vs_baseline"] == pytest.approx(0.75) and t.loc["stock", "busy_ms"] == 4.0
    assert A.spread(rows, "m", 128, "whole") == pytest.approx(2.0)
    assert A.spread(rows, "m", 128, "eager") == pytest.approx(17 / 15)  # eager steps flatten the differences
    with pytest.raises(ValueError, match=r"m at 512 in whole: measured \['flash'\], need"):
        A.spread(rows, "m", 512, "whole")


def test_the_box_shows_each_variant_against_the_baseline_and_what_is_missing(root):
    """The box's table has the baseline's own figures and every variant's paired effects, as formatted
    from answer.load; a part not measured reads as not measured, never as a number."""
    from attnpaper.analysis import box

    ans = A.load(root)
    html = box.render(ans)
    flash = ans["effects"].loc["flash"]
    ci = f"{flash['time_low']:.2f} to {flash['time_high']:.2f}"
    assert f"<td>{flash['time_ratio']:.2f}\u00d7<span class='answer-ci'> {ci}</span></td>" in html
    assert "0.80\u00d7" in html and "1.60\u00d7" in html  # memory: flash and linear over the baseline's 1000 MB
    assert f"accuracy {statistics.mean(ACC['baseline']):.4f}" in html and "1,000 MB" in html
    # the header, the 128-token group, the baseline, flash, linear, the missing 512 runs; the artefacts' 4 rows
    assert html.count("<tr") == 1 + 1 + 3 + 1 + 4
    assert "Not yet measured at this commit" in html and html.count("not yet run at this commit") == 2
    assert html.count("not yet measured at this commit") == 2  # memory and time tests
    assert "<code>abc</code>" in html and "NVIDIA Test GPU" in html
    assert html.count("<td>not measured</td>") == 3  # no step benchmark: the last column


def test_the_box_words_follow_the_numbers():
    """Signs and the interval's wording come from the values: a bound just below zero keeps its digits."""
    from attnpaper.analysis import box

    assert box.pts(-0.0004) == "\u22120.0004" and box.pts(0.25) == "+0.25" and box.pts(-5.24) == "\u22125.24"
    assert box.pts(-2e-15) == "+0.00" and box.pts(-0.0) == "+0.00"  # equal means: float noise is no difference
    assert box.pts(-0.007) == "\u22120.01"  # rounds as usual where two decimals do not read as zero
    assert "MiniLM" in box.stand_in("bundle/all-MiniLM-L6-v2-fp16") and "stand-in" in box.stand_in("x/MiniLM")


def test_readme_table_is_the_records_table():
    """The README quotes the results table and the step figures of results/h200; they must be what the
    files give now (after new results: make readme)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "readme_table.py"
    spec = importlib.util.spec_from_file_location("readme_table", path)
    readme_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(readme_table)
    readme = (path.parent.parent / "README.md").read_text()
    quoted = readme_table.between(readme, readme_table.START, readme_table.END)
    assert quoted == readme_table.current().strip(), "README's results table is stale: run `make readme`"
    quoted = readme_table.between(readme, readme_table.LONG_START, readme_table.LONG_END)
    long = readme_table.current(readme_table.RESULTS / A.LONG).strip()
    assert quoted == long, "README's 512-token table is stale: run `make readme`"
    quoted = readme_table.between(readme, readme_table.STEP_START, readme_table.STEP_END)
    assert quoted == readme_table.step_figures(), "README's step figures are stale: run `make readme`"
    quoted = readme_table.between(readme, readme_table.VERDICT_START, readme_table.VERDICT_END)
    assert quoted == readme_table.verdict_text(), "README's verdict is stale: run `make readme`"
    assert readme.index(readme_table.VERDICT_START) < readme.index("\n## "), "the verdict opens the README"


def test_arm_table_and_an_arm_of_another_commit(root):
    """The arms' comparisons as table rows; an arm run at another commit than the main runs is refused."""
    records(root / "artefacts" / "dropout", {"baseline": [0.880, 0.882, 0.878]}, "dddddddddddd")
    t = A.arm_table(A.load(root))
    assert list(t.index.get_level_values("arm")) == ["dropout"] * 3
    assert t.loc[("dropout", "baseline: arm - main runs"), "points"] == pytest.approx(1.0)
    assert t.loc[("dropout", "flash (main runs) - baseline (arm)"), "seeds"] == 3
    rec = make_record("baseline", 0, 0.9, config_hash="eeeeeeeeeeee") | {"git_sha": "def"}
    write_record(rec, root / "artefacts" / "fp16" / "records" / "baseline_seed0_eeeeeeeeeeee.json")
    with pytest.raises(
        ValueError, match="artefacts/fp16: commit def, the main runs abc; the box compares runs of one commit"
    ):
        A.load(root)


def kernels_report(path):
    """A kernels report where elu's time falls below the fastest exact kernel's from N = 1024 on."""
    times = {"sdpa-cudnn": {256: 1.0, 512: 2.0, 1024: 4.0}, "elu": {256: 3.0, 512: 3.0, 1024: 3.0}}
    rows = [
        {"mechanism": m, "seq_len": n, "pass": "fwd_bwd", "ms": t, "status": "ok"}
        for m, by_n in times.items()
        for n, t in by_n.items()
    ]
    path.write_text(json.dumps({"kind": "scaling-kernels", "rows": rows}))


def test_the_box_gives_kernel_crossovers_before_the_step_sweep(root):
    """With the kernels measured and the whole-step sweep not yet, the box gives the kernels' crossover and
    says the steps' are not measured; it never reads a step crossover from elsewhere."""
    from attnpaper.analysis import box

    kernels_report(root / "scaling-kernels.json")
    ans = A.load(root)
    assert ans["pays_from"] == {"kernel_elu": 1024}
    html = box.render(ans)
    assert "elu+1 kernel (not trained)</th>" in html and "<td>N = 1,024</td>" in html
    assert "The whole steps' crossovers: not yet measured at this commit." in html
    assert "The same runs at IMDb's own 512 tokens: not yet run at this commit." in html


def test_the_box_shows_the_same_runs_at_512_tokens(root):
    """Runs in len512/ of the main runs' commit get their own table, paired by seed like the first; runs of
    another commit are refused."""
    from attnpaper.analysis import box

    long = root / A.LONG
    records(long, {"baseline": [0.90, 0.91, 0.92], "flash": [0.91, 0.91, 0.91]}, "ffffffffffff")
    ans = A.load(root)
    assert ans["long"]["effects"].loc["flash", "acc_pts"] == pytest.approx(0.0)
    assert ans["long"]["baseline"]["accuracy"] == pytest.approx(0.91) and ans["long"]["baseline"]["seeds"] == 3
    html = box.render(ans)
    assert html.count("tokens, 3 seeds</th>") == 2 and "accuracy 0.9100" in html  # two length groups
    rec = make_record("flash", 3, 0.9, config_hash="ffffffffffff") | {"git_sha": "def"}
    write_record(rec, long / "records" / "flash_seed3_ffffffffffff.json")
    with pytest.raises(ValueError, match="len512: commit abc, def, the main runs abc; the box compares runs of one"):
        A.load(root)


def test_the_box_and_the_table_print_the_same_intervals():
    """The box and `python -m attnpaper table` state one quantity with one set of digits: each rounds the
    paired ratios once (the table rounded to 3 places and again to 2, and printed 0.8748 as 0.88)."""
    from pathlib import Path

    from attnpaper.analysis.results import load_records
    from attnpaper.analysis.tables import format_table

    root = Path(__file__).resolve().parent.parent / PUBLISHED
    text = format_table(load_records(root), "markdown")
    for v, e in A.load(root)["effects"].iterrows():
        row = next(line for line in text.splitlines() if f"| {v} " in line)
        for stem in ("time", "mem"):
            assert f"{e[f'{stem}_ratio']:.2f}x [{e[f'{stem}_low']:.2f}, {e[f'{stem}_high']:.2f}]" in row, (v, stem)


def test_the_box_says_which_step_rows_are_missing(root):
    """A variant whose whole step has no row at the long lengths: the box names it and the length, and
    does not read its absence as another variant's crossover."""
    from attnpaper.analysis import box

    kernels_report(root / "scaling-kernels.json")
    rows = [
        {
            "variant": v,
            "seq_len": n,
            "batch_size": 8192 // n,
            "tokens_per_batch": 8192,
            "status": "ok",
            "step_time_ms_median": t,
            "peak_memory_mb": 100.0,
        }
        for v, times in {
            "baseline": [10, 30, 90],
            "sdpa": [9, 20],
            "flash": [8, 21, 40],
            "linear": [30, 30, 30],
            "hybrid": [20, 25, 35],
        }.items()
        for n, t in zip([512, 1024, 2048], times)
    ]
    (root / "scaling-model.json").write_text(
        json.dumps({"kind": "scaling-model", "tokens_per_batch": 8192, "rows": rows})
    )
    ans = A.load(root)
    assert ans["pays_from"]["step_unrecorded"] == {"sdpa": [2048]}
    assert ans["pays_from"]["step_flash_sdpa"] is None  # 21 > 20 at 1024, sdpa's last length
    assert ans["pays_from"]["step_linear_exact"] == 2048  # against flash, the fastest recorded there
    html = box.render(ans)
    assert "sdpa's whole step has no record from N = 2,048" in html
    assert "flash step below sdpa's</th>" in html and "<td>none up to the longest</td>" in html
    assert ans["pays_from"]["step_without_tf32"] == ["hybrid", "linear"]  # rows that do not say tf32
    assert "the hybrid and linear steps ran without TF32" in html
    for r in rows:
        r["float32_matmuls"] = "tf32"
    (root / "scaling-model.json").write_text(
        json.dumps({"kind": "scaling-model", "tokens_per_batch": 8192, "rows": rows})
    )
    assert "step_without_tf32" not in A.load(root)["pays_from"]


def test_the_t4_setups_steps_and_spread(root):
    """bench-t4/ (issue 39): step ratios and the paper's variants' spread of the eager steps in the setup a T4
    user had, read by load beside the rest; a row of another setup there is refused, naming its file."""
    import json

    def row(v, wall, setup="t4"):
        return {
            "variant": v,
            "step_mode": "eager",
            "model": "distilbert-base-random",
            "max_length": 128,
            "step_time_ms_median": wall,
            "gpu_busy_ms_per_step": wall / 2,
            "peak_memory_mb": 900.0,
            "setup": setup,
        }

    rows = [row(v, w) for v, w in zip(A.PAPER_ORDER, [40.0, 41.0, 42.0, 41.5])] + [row("sdpa", 39.0)]
    out = A.t4_setup(rows)
    assert out["spread"] == pytest.approx(42 / 40) and out["steps"].loc["linear", "wall_vs_baseline"] == 1.05
    folder = root / A.T4_SETUP
    assert "t4_setup" not in A.load(root)
    folder.mkdir()
    (folder / "bench-distilbert-128-c1.json").write_text(json.dumps({"rows": rows}))
    assert A.load(root)["t4_setup"]["spread"] == out["spread"]
    (folder / "bench-distilbert-128-c2.json").write_text(json.dumps({"rows": [row("sdpa", 5.0, "ours")]}))
    with pytest.raises(ValueError, match="another setup than t4: bench-distilbert-128-c2.json"):
        A.t4_setup(A.bench_rows(folder))
