"""The Trainer reference row (bench/trainer_ref.py, `python -m attnpaper trainer-ref`): its refusals, one line
each before any model or data is loaded, and (slow) a tiny run's record, skipped on a rerun, redone by --force."""

import json

import pytest
from helpers import one_error_line, own_hash_cache

from attnpaper.__main__ import main
from attnpaper.variants import VARIANTS

TINY = ["trainer-ref", "--model", "bert-tiny-random", "--data", "synthetic"]
SMALL = ["--train-samples", "64", "--test-samples", "32", "--max-length", "32"]


@pytest.fixture(autouse=True)
def _hash_cache(tmp_path, monkeypatch):
    own_hash_cache(tmp_path, monkeypatch)


@pytest.fixture
def no_training(monkeypatch):
    """trainer-ref may check its arguments, but neither load a model nor train."""
    from attnpaper.bench import trainer_ref

    def work(*a, **k):
        raise AssertionError("loaded or trained before the input was checked")

    monkeypatch.setattr(trainer_ref, "prepare", work)
    monkeypatch.setattr(trainer_ref, "train_reference", work)


@pytest.mark.parametrize(
    "argv,says",
    [
        (["--out", ""], "--out '' is empty; give the folder the records go to"),
        (["--out", "  "], "--out '  ' is empty"),
        (["--out", "{tmp}/a-file"], "a-file is a file; give a folder for the records"),
        (["--seeds", "-1"], "--seeds -1: must be an int in [0,"),
        (["--max-length", "4"], "--max-length 4: must be an int >= 8"),
        (["--max-length", "100000"], "--max-length 100000: the model has 512 positions; valid: 8 to 512"),
        (["--train-samples", "0"], "--train-samples 0: must be None (all) or an int >= 1"),
        (["--train-samples", "20"], "--train-samples 20: 20 train row(s) of 2000, fewer than one batch"),
        (["--test-samples", "1"], "--test-samples 1: the 1 test row(s) of 500 all have label 1"),
        (["--data", "{tmp}/no-data"], "IMDb data directory {tmp}/no-data does not exist"),
        (["--data", "{tmp}/cache.npz"], "token cache {tmp}/cache.npz does not exist"),
        (["--model", "{tmp}/no-model"], "model directory {tmp}/no-model does not exist; valid:"),
        (["--model", "{tmp}"], "the model folder {tmp} has no config.json"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_work(argv, says, tmp_path, capsys, no_training):
    (tmp_path / "a-file").write_text("")
    out = ["--out", str(tmp_path / "records")] if "--out" not in argv else []
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main([*TINY, *out, *argv]) == 2
    one_error_line(capsys, says.replace("{tmp}", str(tmp_path)))
    assert not (tmp_path / "records").exists()  # nothing written


@pytest.mark.parametrize("argv,says", [([], "required: --out"), (["--out", "x", "--seeds", "a"], "invalid int")])
def test_usage_errors_are_one_line(argv, says, capsys, no_training):
    with pytest.raises(SystemExit) as stop:
        main([*TINY, *argv])
    assert stop.value.code == 2
    one_error_line(capsys, says)


def test_the_records_never_pool_with_the_runs():
    from attnpaper.bench import trainer_ref as T

    assert T.TRAINER not in VARIANTS
    cfg = T.reference_config("bert-tiny-random", "synthetic", 3)
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.max_length) == (5e-5, 32, 3, 128)  # the paper's
    assert T.record_path("out", cfg).name.startswith("trainer_seed3_")


@pytest.mark.slow
def test_a_tiny_run_is_recorded_skipped_when_rerun_and_redone_with_force(tmp_path, capsys):
    from attnpaper.experiment.records import read_record

    out = tmp_path / "trainer"
    assert main([*TINY, *SMALL, "--seeds", "0", "1", "--out", str(out)]) == 0
    paths = sorted(out.glob("trainer_seed*.json"))
    assert [p.name.split("_")[1] for p in paths] == ["seed0", "seed1"]
    rec = read_record(paths[0])  # every field the runs' records have
    assert rec["status"] == "ok" and rec["variant"] == "trainer" and rec["seed"] == 0
    assert 0 <= rec["accuracy"] <= 1 and rec["test_samples_used"] == 32 and rec["train_samples_used"] == 64
    assert rec["steps"] == 6 and rec["precision"] == "fp32" and rec["peak_memory_mb"] is None  # a CPU
    assert rec["attn_implementation_used"] == "sdpa" and rec["model_class"] == "BertForSequenceClassification"
    assert rec["max_length"] == 32 and rec["lr"] == 5e-5 and rec["batch_size"] == 32 and rec["git_sha"]
    parts = rec["time_parts_s"]
    assert {"start", "data", "model", "steps", "evaluation", "other"} <= set(parts)
    assert rec["end_to_end_s"] == pytest.approx(sum(parts.values())) and rec["train_time_s"] > 0
    assert rec["first_in_process"] and not read_record(paths[1])["first_in_process"]
    said = capsys.readouterr().out
    assert "seed 0: accuracy" in said and "seed 1: accuracy" in said

    before = {p: p.stat().st_mtime_ns for p in paths}
    assert main([*TINY, *SMALL, "--seeds", "0", "1", "--out", str(out)]) == 0
    assert "skip seed 0" in capsys.readouterr().out and all(p.stat().st_mtime_ns == t for p, t in before.items())

    assert main([*TINY, *SMALL, "--seeds", "1", "--out", str(out), "--force"]) == 0
    assert paths[1].stat().st_mtime_ns != before[paths[1]] and paths[0].stat().st_mtime_ns == before[paths[0]]
    again = json.loads(paths[1].read_text())
    assert again["status"] == "ok" and again["first_in_process"]  # the first seed this process ran
