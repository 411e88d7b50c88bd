"""The paper-memory artefact test (bench/artefacts.py): its rows, its refusals, and its command line."""

import json

import pytest

from attnpaper.__main__ import main
from attnpaper.bench import artefacts as A


def test_kept_arm_keeps_every_model_and_reports_each_in_order(lengths_npy):
    lengths = A.imdb_lengths_for(lengths_npy, 32)
    rows = A.run_kept(["baseline", "linear"], "bert-tiny-random", 32, 4, 1, lengths, device="cpu")
    assert [(r["variant"], r["position"]) for r in rows] == [("baseline", 1), ("linear", 2)]
    for r in rows:  # no CUDA here: memory counters are None, the static parts are measured
        assert r["peak_memory_mb"] is None and r["gradients_mb"] == r["weights_mb"] > 0
        assert r["optimizer_mb"] == pytest.approx(2 * r["weights_mb"], rel=1e-3)  # AdamW: two moments per weight


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--variants", "baseline", "fast"], "unknown variant(s) fast; valid: baseline, flash, linear, hybrid"),
        (["--arms", "warm"], "unknown arm(s) warm; valid: kept, fresh"),
        (["--steps", "0"], "steps must be an int >= 1, got 0"),
        (["--model", "distilbert-base-uncased"], "must be a random-init alias"),
    ],
)
def test_bad_input_is_one_line_before_any_work(argv, says, capsys, monkeypatch, lengths_npy):
    def expensive(*a, **k):
        raise AssertionError("measured before the input was checked")

    monkeypatch.setattr(A, "run_kept", expensive)
    monkeypatch.setattr(A, "run_fresh", expensive)
    assert main(["paper-memory", "--data", str(lengths_npy), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_both_arms_from_the_command_line(tmp_path, lengths_npy, capsys):
    out = tmp_path / "memory.json"
    argv = ["paper-memory", "--model", "bert-tiny-random", "--max-length", "32", "--batch-size", "4", "--cases"]
    assert (
        main([*argv, "--steps", "1", "--variants", "baseline", "flash", "--data", str(lengths_npy), "--out", str(out)])
        == 0
    )
    rep = json.loads(out.read_text())
    assert rep["git_sha"] and rep["step_mode"] == "eager" and rep["batch_size"] == 4 and rep["device"]
    assert "cases" not in rep  # --cases alone: none (tests/test_memory_cases.py runs them)
    assert [(r["arm"], r["variant"]) for r in rep["rows"]] == [
        ("fresh", "baseline"),
        ("fresh", "flash"),
        ("kept", "baseline"),
        ("kept", "flash"),
    ]
