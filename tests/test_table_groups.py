"""The results table's cases from issue 37: rows that differ in setting, device, commit or step mode say so;
pooling across commits or step modes is warned about; failed runs read "failed", never "not evaluated";
a folder where every run failed prints its failures, never a traceback."""

import io
from pathlib import Path

import pandas as pd
import pytest
from helpers import make_record

from attnpaper.__main__ import main
from attnpaper.analysis.answer import PUBLISHED
from attnpaper.analysis.groups import pooling_warnings, setting_labels
from attnpaper.analysis.results import load_records, paired_ratio_vs_baseline, results_table, summarise
from attnpaper.analysis.tables import display_table, format_table
from attnpaper.experiment.records import write_record
from attnpaper.training.config import RunConfig

HEADER = ["model", "N", "variant", "n", "accuracy", "vs baseline, pts [95% CI]"]


def write(folder, recs):
    for i, r in enumerate(recs):
        write_record(r, Path(folder) / "records" / f"{r['variant']}_seed{r['seed']}_{r['config_hash']}_{i}.json")
    return load_records(folder)


def lr_sweep(lr, config_hash, **extra):
    """Baseline and flash, two seeds, at one learning rate, with the config dict a run records."""
    config = RunConfig(lr=lr).hashed_dict()
    return [
        make_record(v, s, 0.8 + s / 100, config_hash=config_hash, lr=lr, config=config, **extra)
        for v in ("baseline", "flash")
        for s in range(2)
    ]


def test_one_configuration_adds_no_column(tmp_path):
    shown = display_table(write(tmp_path, lr_sweep(5e-5, "aaaaaaaaaaaa")))
    assert list(shown.columns[: len(HEADER)]) == HEADER
    assert not {"device", "setting", "commit", "step mode"} & set(shown.columns)


def test_two_lr_sweeps_in_one_folder_are_told_apart_by_the_setting_that_differs(tmp_path):
    recs = write(tmp_path, lr_sweep(5e-5, "aaaaaaaaaaaa") + lr_sweep(1e-4, "bbbbbbbbbbbb"))
    assert setting_labels(recs) == {"aaaaaaaaaaaa": "lr=5e-05", "bbbbbbbbbbbb": "lr=0.0001"}
    shown = display_table(recs)
    assert list(shown.columns[:4]) == ["model", "N", "setting", "variant"]
    assert sorted(zip(shown["setting"], shown["variant"])) == sorted(
        (s, v) for s in ("lr=5e-05", "lr=0.0001") for v in ("baseline", "flash")
    )
    csv = pd.read_csv(io.StringIO(format_table(recs, "csv")))
    assert set(csv["setting"]) == {"lr=5e-05", "lr=0.0001"} and set(csv["config_hash"]) == {
        "aaaaaaaaaaaa",
        "bbbbbbbbbbbb",
    }
    assert pooling_warnings(recs) == []


def test_records_without_a_config_dict_fall_back_to_their_fields_or_hash(tmp_path):
    recs = write(
        tmp_path,
        [make_record("baseline", 0, 0.8, config_hash="aaaaaaaaaaaa", epochs=3)]
        + [make_record("baseline", 0, 0.8, config_hash="bbbbbbbbbbbb", epochs=5)]
        + [make_record("baseline", 0, 0.8, config_hash="cccccccccccc", epochs=5)],
    )
    assert setting_labels(recs) == {"aaaaaaaaaaaa": "epochs=3", "bbbbbbbbbbbb": "epochs=5", "cccccccccccc": "epochs=5"}
    same = write(tmp_path / "same", [make_record("baseline", 0, 0.8, config_hash=h) for h in ("a" * 12, "b" * 12)])
    assert setting_labels(same) == {"a" * 12: f"config {'a' * 12}", "b" * 12: f"config {'b' * 12}"}


def test_device_commit_and_step_mode_columns_where_rows_differ(tmp_path):
    recs = write(
        tmp_path,
        [make_record("baseline", 0, 0.8, device="NVIDIA H100", git_sha="1" * 40, step_mode="whole")]
        + [make_record("baseline", 0, 0.8, device="NVIDIA H200", git_sha="2" * 40, step_mode="eager")],
    )
    shown = display_table(recs).set_index("device")
    assert list(shown.columns[:5]) == ["model", "N", "commit", "step mode", "variant"]
    assert shown.loc["NVIDIA H100", "commit"] == "1" * 7 and shown.loc["NVIDIA H200", "step mode"] == "eager"
    assert pooling_warnings(recs) == []  # two devices are two groups: nothing pooled


@pytest.mark.parametrize(
    "first,second,says",
    [
        ({"git_sha": "a" * 40}, {"git_sha": "b" * 40}, f"2 commits ({'a' * 12}, {'b' * 12})"),
        ({"step_mode": "whole"}, {"step_mode": "eager"}, "2 step modes (eager, whole)"),
    ],
)
def test_a_configuration_pooled_across_commits_or_step_modes_is_warned_about(tmp_path, capsys, first, second, says):
    recs = [make_record(v, 0, 0.8, **first) for v in ("baseline", "flash")]
    recs += [make_record(v, 1, 0.81, **second) for v in ("baseline", "flash")]
    recs += [make_record("flash", 2, None, status="failed", git_sha="c" * 40)]  # a failure pools no number
    [line] = pooling_warnings(write(tmp_path, recs))
    assert line.startswith("warning: configuration aaaaaaaaaaaa on NVIDIA Test GPU pools runs from ") and says in line
    assert main(["table", str(tmp_path)]) == 0
    assert capsys.readouterr().err.strip() == line


def test_a_variant_whose_runs_all_failed_reads_failed_with_its_error_in_csv(tmp_path):
    recs = [make_record("baseline", s, 0.8 + s / 100) for s in range(2)]
    recs += [
        make_record("flash", s, None, status="failed", error=f"OutOfMemoryError: seed {s}\nTraceback...")
        for s in range(2)
    ]
    recs += [make_record("sdpa", 0, None)]  # eval=False: not a failure
    recs = write(tmp_path, recs)
    shown = display_table(recs).set_index("variant")
    assert shown.loc["flash", "accuracy"] == "failed (2)" and shown.loc["flash", "failed"] == 2
    assert shown.loc["sdpa", "accuracy"] == "not evaluated"
    csv = pd.read_csv(io.StringIO(format_table(recs, "csv"))).set_index("variant")
    assert csv.loc["flash", "error"] == "OutOfMemoryError: seed 0 | OutOfMemoryError: seed 1"
    assert csv["error"].isna()[["baseline", "sdpa"]].all()
    chapter = results_table(summarise(recs).set_index("variant"))
    assert chapter.loc["flash", "accuracy"] == "failed (2)" and chapter.loc["flash", "train s (n)"] == "-"


@pytest.mark.parametrize("fmt", ["text", "markdown", "latex", "csv"])
def test_a_folder_where_every_run_failed_prints_its_failures_and_exits_1(tmp_path, capsys, fmt):
    write(tmp_path, [make_record(v, s, None, status="failed") for v in ("baseline", "flash") for s in range(2)])
    assert main(["table", str(tmp_path), "--format", fmt]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and out.count("failed (2)" if fmt != "csv" else "NonFiniteLoss: boom") == 2
    assert err.strip() == (
        f"error: every run under {tmp_path} failed (4 records): no results, only the failures above "
        f"(--format csv gives each error's first line)"
    )


def test_ratios_of_a_configuration_without_ok_runs_refuse_in_words(tmp_path):
    recs = write(tmp_path, [make_record("baseline", 0, None, status="failed")])
    with pytest.raises(ValueError, match="no successful 'baseline' runs with peak_memory_mb to pair with"):
        paired_ratio_vs_baseline(recs, "peak_memory_mb")


@pytest.mark.parametrize("folder", ["", "len512", "artefacts/fp16", "artefacts/dropout"])
def test_the_published_records_pool_no_commits_or_step_modes(folder):
    """Each committed configuration ran at one commit in one step mode: the published means pool nothing."""
    assert pooling_warnings(load_records(Path(__file__).resolve().parents[1] / PUBLISHED / folder)) == []
