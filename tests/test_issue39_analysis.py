"""Issue 39's records read back (analysis/answer.py, trainer.py, memory.py, tables.py), from folders built here:
the arms nomask, elu and favor4x against their paired main runs, the Trainer's row against the baseline,
the paper-memory report's cases, and what each says when its files are not there."""

import json
import math
import statistics
from pathlib import Path

import pandas as pd
import pytest
from helpers import make_record

from attnpaper.__main__ import main
from attnpaper.analysis import answer as A
from attnpaper.analysis import memory as M
from attnpaper.analysis import trainer as T
from attnpaper.analysis.answer import PUBLISHED
from attnpaper.analysis.results import load_records, paired_frame, paired_points, t_quantile
from attnpaper.analysis.tables import format_table
from attnpaper.experiment.records import write_record

SEEDS = range(5)
MAIN = {
    "baseline": {"acc": [0.870, 0.872, 0.868, 0.871, 0.869], "time": [10.0, 10.2, 9.8, 10.1, 9.9], "mem": 1000.0},
    "flash": {"acc": [0.871, 0.870, 0.869, 0.873, 0.868], "time": [6.0, 6.3, 5.9, 6.1, 6.2], "mem": 800.0},
    "linear": {"acc": [0.820, 0.821, 0.818, 0.822, 0.819], "time": [12.0, 12.1, 11.7, 12.2, 11.9], "mem": 1600.0},
}
ARM = {  # seeds 0-2 of the paired variant, run another way
    "nomask": {"acc": [0.866, 0.869, 0.865], "time": [7.0, 7.4, 6.9], "mem": 950.0},
    "elu": {"acc": [0.841, 0.838, 0.842], "time": [11.0, 11.3, 10.9], "mem": 1500.0},
    "favor4x": {"acc": [0.829, 0.827, 0.831], "time": [15.0, 15.5, 14.8], "mem": 2100.0},
}


def write(folder, variant, numbers, config_hash, seeds=SEEDS, **extra):
    """One record per seed of ``variant``, its accuracy, time without compile (with compile 5 s more),
    end to end (20 s more) and peak memory from ``numbers``."""
    for s, acc, time in zip(seeds, numbers["acc"], numbers["time"]):
        rec = make_record(variant, s, acc, config_hash=config_hash, peak_memory_mb=numbers["mem"], **extra)
        rec |= {"train_time_excl_compile_s": time, "train_time_s": time + 5, "end_to_end_s": time + 20}
        write_record(rec, folder / f"{variant}_seed{s}_{config_hash}.json")


@pytest.fixture
def root(tmp_path):
    for v, numbers in MAIN.items():
        write(tmp_path / "records", v, numbers, "aaaaaaaaaaaa")
    return tmp_path


def with_arm(root, arm):
    write(root / "artefacts" / arm / "records", A.VARIANT_ARMS[arm], ARM[arm], "cccccccccccc", seeds=range(3))


def one_configuration(tmp_path, pairs):
    """``effects`` of records written as one configuration: each (name, numbers, seeds) a variant of it."""
    for variant, numbers, seeds in pairs:
        write(tmp_path, variant, numbers, "bbbbbbbbbbbb", seeds=seeds)
    return A.effects(load_records(tmp_path))


@pytest.mark.parametrize("arm", list(A.VARIANT_ARMS))
def test_each_arm_is_paired_with_its_variants_main_runs_of_the_same_seeds(root, arm, tmp_path_factory):
    """The arm against the main runs of its variant: accuracy as accuracy_artefact pairs it, and every column
    as ``effects`` gives it for the same numbers written as a baseline and a variant of one configuration."""
    with_arm(root, arm)
    variant = A.VARIANT_ARMS[arm]
    ans = A.load(root)
    found = ans[arm]["effects"]
    assert ans[arm]["variant"] == variant and ans[arm]["setup"]["git_sha"] == "abc"
    assert list(found.index) == ["vs_main", "vs_baseline"] and list(found.columns) == A.PAIRED_COLUMNS

    main, recs = load_records(root), load_records(root / "artefacts" / arm)
    same = A.accuracy_artefact(main, recs)  # the fp16 and dropout arms' statistic
    for field in ("pts", "low", "high", "pairs"):
        column = {"pts": "acc_pts", "low": "acc_low", "high": "acc_high", "pairs": "pairs"}[field]
        assert found.loc["vs_main", column] == pytest.approx(same[f"{variant}_change_{field}"])

    for comparison, reference in (("vs_main", variant), ("vs_baseline", "baseline")):
        pairs = [("baseline", MAIN[reference], range(3)), (variant, ARM[arm], range(3))]
        expected = one_configuration(tmp_path_factory.mktemp(comparison), pairs).loc[variant]
        for column in expected.index:
            assert found.loc[comparison, column] == pytest.approx(expected[column]), (comparison, column)


def test_the_arms_numbers_by_hand(root):
    """elu against linear: the mean accuracy difference with its t interval, the time ratio as the geometric
    mean of the seeds' ratios, memory and end to end as ratios, over the arm's three seeds only."""
    with_arm(root, "elu")
    row = A.load(root)["elu"]["effects"].loc["vs_main"]
    d = [100 * (a - m) for a, m in zip(ARM["elu"]["acc"], MAIN["linear"]["acc"])]
    half = t_quantile(2) * statistics.stdev(d) / math.sqrt(3)
    assert row["pairs"] == 3 and row["acc_pts"] == pytest.approx(statistics.mean(d))
    assert (row["acc_low"], row["acc_high"]) == pytest.approx((statistics.mean(d) - half, statistics.mean(d) + half))
    logs = [math.log(a / m) for a, m in zip(ARM["elu"]["time"], MAIN["linear"]["time"])]
    assert row["time_ratio"] == pytest.approx(math.exp(statistics.mean(logs)))
    assert row["time_low"] < row["time_ratio"] < row["time_high"]
    logs = [math.log((a + 20) / (m + 20)) for a, m in zip(ARM["elu"]["time"], MAIN["linear"]["time"])]
    assert row["e2e_ratio"] == pytest.approx(math.exp(statistics.mean(logs)))
    assert row["mem_ratio"] == pytest.approx(1500 / 1600)


def test_the_arm_table_labels_each_comparison(root):
    for arm in ("nomask", "favor4x"):
        with_arm(root, arm)
    ans = A.load(root)
    table = A.variant_arm_table(ans)
    assert list(table.index) == [
        ("nomask", "against flash (main runs)"),
        ("nomask", "against baseline (main runs)"),
        ("favor4x", "against linear (main runs)"),
        ("favor4x", "against baseline (main runs)"),
    ]
    assert table.loc[("favor4x", "against baseline (main runs)"), "mem_ratio"] == pytest.approx(2.1)
    assert A.variant_arms(ans)["elu"] is A.NOT_RUN and A.variant_arms(ans)["nomask"] is ans["nomask"]
    assert A.arm_table(ans).empty  # the old arms (fp16, dropout) only: none here


def test_nothing_of_issue_39_run_leaves_the_answer_as_it_was(root):
    """No arm folder, no trainer/, no cases section: the answer's keys are the main runs' alone, and the
    readers say 'not run' (None) rather than fail or fill in a number."""
    (root / "artefacts").mkdir()
    rows = [
        {"arm": arm, "variant": v, "peak_memory_mb": 1000.0 * (i + 1), "growth_mb": 1000.0}
        for arm in ("kept", "fresh")
        for i, v in enumerate(A.PAPER_ORDER)
    ]
    (root / "artefacts" / "paper-memory.json").write_text(json.dumps({"rows": rows}))  # before issue 39: no cases
    ans = A.load(root)
    assert "memory" in ans and not {*A.VARIANT_ARMS, "trainer", "memory_cases"} & set(ans)
    assert A.variant_arms(ans) == {"nomask": None, "elu": None, "favor4x": None}
    assert A.variant_arm_table(ans).empty
    assert T.trainer_folder(root) is None and M.load_memory_cases(root) is None
    (root / "trainer").mkdir()  # made, but no record written in it yet
    assert T.trainer_folder(root) is None and "trainer" not in A.load(root)


def test_an_arm_that_failed_every_run_pairs_nothing(root):
    for s in range(3):
        rec = make_record("flash", s, None, config_hash="cccccccccccc", status="failed")
        write_record(rec, root / "artefacts" / "nomask" / "records" / f"flash_seed{s}_cccccccccccc.json")
    row = A.load(root)["nomask"]["effects"].loc["vs_main"]
    assert row["pairs"] == 0 and row.drop("pairs").isna().all()


def test_pairing_across_devices_or_an_arm_of_another_commit_is_refused(root):
    write(root / "artefacts" / "elu" / "records", "linear", ARM["elu"], "cccccccccccc", range(3), device="Other GPU")
    main, arm = load_records(root), load_records(root / "artefacts" / "elu")
    with pytest.raises(ValueError, match="pairs within one device, model and length; these records hold 2"):
        paired_frame(main[main["variant"] == "linear"], arm)
    with pytest.raises(ValueError, match="a variant named 'baseline'"):
        paired_frame(main[main["variant"] == "linear"], main)
    write(root / "artefacts" / "elu" / "records", "linear", ARM["elu"], "cccccccccccc", range(3), git_sha="def")
    with pytest.raises(ValueError, match="artefacts/elu: commit def, the main runs abc"):
        A.load(root)


TRAINER = {"acc": [0.860, 0.865, 0.861, 0.863, 0.862], "time": [40.0, 41.0, 39.5, 40.5, 40.2], "mem": 1400.0}


def with_trainer(root, seeds=SEEDS, **extra):
    """Trainer records as bench/trainer_ref.py writes them: variant 'trainer', no compile (train_time_s is
    its training time), end to end 20 s more."""
    for s, acc, time in zip(seeds, TRAINER["acc"], TRAINER["time"]):
        rec = make_record("trainer", s, acc, config_hash="tttttttttttt", peak_memory_mb=TRAINER["mem"])
        rec |= {"train_time_s": time, "end_to_end_s": time + 20, "step_mode": "eager"} | extra
        del rec["notes"]  # the Trainer's records have none
        write_record(rec, root / "trainer" / f"trainer_seed{s}_tttttttttttt.json")


def test_the_trainer_row_its_figures_and_ratios_to_the_baseline(root):
    with_trainer(root)
    found = A.load(root)["trainer"]
    fig, vs = found["figures"], found["vs_baseline"]
    assert fig["n"] == 5 and fig["accuracy"] == pytest.approx(statistics.mean(TRAINER["acc"]))
    assert fig["accuracy_sd"] == pytest.approx(statistics.stdev(TRAINER["acc"]))
    assert fig["train_s"] == pytest.approx(statistics.mean(TRAINER["time"])) and fig["peak_mb"] == 1400.0
    assert fig["end_to_end_s"] == pytest.approx(statistics.mean(TRAINER["time"]) + 20) and fig["max_length"] == 128
    assert found["setup"]["step_mode"] == "eager"
    base = MAIN["baseline"]
    d = [100 * (t - b) for t, b in zip(TRAINER["acc"], base["acc"])]
    assert vs["pairs"] == 5 and vs["acc_pts"] == pytest.approx(statistics.mean(d))
    assert vs["acc_low"] == pytest.approx(paired_points(pd.Series(TRAINER["acc"]), pd.Series(base["acc"]))["low"])

    def ratio(ours, theirs):
        return math.exp(statistics.mean(math.log(a / b) for a, b in zip(ours, theirs)))

    assert vs["time_ratio"] == pytest.approx(ratio(TRAINER["time"], base["time"]))  # against no compile
    assert vs["compiled_ratio"] == pytest.approx(ratio(TRAINER["time"], [t + 5 for t in base["time"]]))
    assert vs["e2e_ratio"] == pytest.approx(ratio([t + 20 for t in TRAINER["time"]], [t + 20 for t in base["time"]]))
    assert vs["mem_ratio"] == pytest.approx(1.4) and vs["time_low"] < vs["time_ratio"] < vs["time_high"]


def test_the_trainer_pairs_over_the_seeds_both_ran(root):
    with_trainer(root, seeds=range(3))
    vs = A.load(root)["trainer"]["vs_baseline"]
    d = [100 * (t - b) for t, b in zip(TRAINER["acc"][:3], MAIN["baseline"]["acc"][:3])]
    assert vs["pairs"] == 3 and vs["acc_pts"] == pytest.approx(statistics.mean(d))


def test_the_trainer_records_never_pool_with_the_runs(root, capsys):
    """load_records refuses variant 'trainer' (each record skipped, said on stderr), and load_trainer the
    runs' variants, so neither reader mixes the two."""
    with_trainer(root)
    with pytest.raises(ValueError, match="no readable records"):
        load_records(root / "trainer")
    assert "unknown variant 'trainer'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no readable records"):
        T.load_trainer(root / "records")
    assert "unknown variant 'baseline' (valid: trainer)" in capsys.readouterr().err
    recs = T.load_trainer(root / "trainer")
    assert (recs["train_time_excl_compile_s"] == recs["train_time_s"]).all()  # it compiles nothing


def test_the_table_shows_the_trainer_row_only_where_there_is_a_trainer_folder(root, capsys):
    assert main(["table", str(root)]) == 0
    assert capsys.readouterr().out == format_table(load_records(root)) + "\n"  # as it always was
    assert main(["table", str(root), "--format", "csv"]) == 0
    before = capsys.readouterr().out
    with_trainer(root)
    assert main(["table", str(root), "--format", "csv"]) == 0
    after = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert len(after) == len(pd.read_csv(pd.io.common.StringIO(before))) + 1
    row = after.iloc[-1]
    vs = A.load(root)["trainer"]["vs_baseline"]
    assert row["variant"] == "trainer" and row["config_hash"] == "tttttttttttt" and row["step_mode"] == "eager"
    assert row["diff_pts"] == pytest.approx(vs["acc_pts"]) and row["n_pairs"] == 5
    assert row["time_ratio"] == pytest.approx(vs["time_ratio"]) and row["memory_ratio"] == pytest.approx(1.4)
    assert row["end_to_end_ratio"] == pytest.approx(vs["e2e_ratio"])
    assert row["setting"].startswith("transformers.Trainer")
    assert main(["table", str(root)]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert "trainer" in last and "transformers.Trainer" in last and f"{vs['mem_ratio']:.2f}x" in last


def test_a_trainer_of_another_device_shows_without_pairs(root, capsys):
    with_trainer(root, device="Other GPU")
    assert main(["table", str(root), "--format", "csv"]) == 0
    row = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out)).iloc[-1]
    assert row["variant"] == "trainer" and row["device"] == "Other GPU" and row["n"] == 5
    assert pd.isna(row["diff_pts"]) and pd.isna(row["time_ratio"])
    with pytest.raises(ValueError, match="pairs within one device, model and length"):
        A.load(root)


def runs(peaks_mb):
    """One case's rows from peaks in MB (None: no GPU), as memory_cases.run_case writes them."""
    return [
        {
            "variant": v,
            "position": i + 1,
            "peak_allocated_bytes": None if p is None else int(p * 10**6),
            "peak_reserved_bytes": None if p is None else int((p + 100) * 2**20),
            "allocated_after_bytes": None,
            "reserved_after_bytes": None,
            "kept_bytes": 1000 * (i + 1),
        }
        for i, (v, p) in enumerate(zip(A.PAPER_ORDER, peaks_mb))
    ]


def test_the_memory_cases_as_a_table_with_the_reports_verdict(tmp_path):
    from attnpaper.bench import memory_cases as C

    assert (M.PEAKS, M.UNIT_NAMES) == (C.PEAKS, C.UNIT_NAMES)  # named twice: analysis sits below bench
    step = C.paper_step()["mean"]
    report = {"rows": []} | C.summarise(
        {
            "nothing": runs([1000, 1010, 1020, 1030]),
            "model": runs([1000, 1000 + step, 1000 + 2 * step, 1000 + 3 * step]),
            "optimizer": runs([1000, 1000 + 2 * step, 1000 + 2 * step, 1000 + 3 * step]),
        }
    )
    (tmp_path / "artefacts").mkdir()
    (tmp_path / "artefacts" / "paper-memory.json").write_text(json.dumps(report))
    found = M.load_memory_cases(tmp_path)
    table = found["table"]
    assert list(table.columns) == M.CASE_COLUMNS and len(table) == 3 * 2 * 2
    assert list(table.index.unique("case")) == ["nothing", "model", "optimizer"]
    model = table.loc[("model", "allocated", "MB")]
    assert model["label"] == "(ii)" and model["keeps"] == "the model (weights)"
    assert model["steps"] == pytest.approx([step] * 3, abs=1e-5) and model["mean"] == pytest.approx(step, abs=1e-5)
    assert model["within"] and model["even"] and abs(model["off_paper"]) < 1e-6
    uneven = table.loc[("optimizer", "allocated", "MB")]
    assert uneven["within"] and not uneven["even"]  # a mean that matches by chance
    assert not table.loc[("nothing", "allocated", "MiB"), "within"]
    assert found["verdict"] == report["verdict"] and "(ii) model (allocated MB, reserved MiB)" in found["verdict"]
    assert found["matching_cases"] == report["matching_cases"]
    assert found["even_cases"] == {"model": ["allocated MB", "reserved MiB"]}
    assert found["paper_step_mb"] == pytest.approx(step) and found["tolerance"] == 0.02 and found["note"] is None
    held = M.memory_cases(report, readings=("kept",))["table"]
    assert list(held.index.unique("reading")) == ["kept"] and len(held) == 3 * 2
    assert set(A.issue39(tmp_path, None)) == {"memory_cases"}  # no arm, no trainer/: the cases alone


def test_memory_cases_from_a_cpu_and_from_a_report_without_them(tmp_path):
    from attnpaper.bench import memory_cases as C

    found = M.memory_cases(C.summarise({c: runs([None] * 4) for c in C.CASES}))
    assert found["table"][["steps", "mean", "off_paper", "within", "even"]].isna().all().all()
    assert found["matching_cases"] is None and C.NO_GPU in found["verdict"] and found["note"] == C.NO_GPU
    assert M.memory_cases({"rows": []}) is None
    assert M.load_memory_cases(tmp_path) is None  # no report at all
    committed = Path(__file__).resolve().parent.parent / PUBLISHED
    assert (committed / "artefacts" / "paper-memory.json").is_file() and M.load_memory_cases(committed) is None
