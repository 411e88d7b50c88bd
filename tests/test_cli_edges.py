"""The command line at its edges (issue 37): each bad argument refused in one line before any work, an
interrupted bench says what it kept and exits 130 or 143, the sweep keeps a record finished before a signal."""

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from helpers import one_error_line, own_hash_cache

from attnpaper.__main__ import main

TINY = ["--model", "bert-tiny-random"]


@pytest.fixture(autouse=True)
def _hash_cache(tmp_path, monkeypatch):
    own_hash_cache(tmp_path, monkeypatch)


@pytest.fixture
def no_measuring(monkeypatch):
    """bench may check its arguments, but neither read IMDb nor measure."""
    from attnpaper.bench import step

    def measure(*a, **k):
        raise AssertionError("read or measured before the input was checked")

    monkeypatch.setattr(step, "measure", measure)
    monkeypatch.setattr(step, "imdb_lengths", measure)


@pytest.fixture
def npys(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    np.save(tmp_path / "zeros.npy", np.zeros(5, dtype=np.int64))
    (tmp_path / "junk.npy").write_text("not numpy")
    return tmp_path


@pytest.mark.parametrize(
    "argv,says",
    [
        (["--lengths", "-5"], "--lengths -5: lengths must be ints from 8 to 512 (the model's positions)"),
        (["--lengths", "0", "128", "100000"], "--lengths 0 100000: lengths must be ints from 8 to 512"),
        (["--batch-size", "1"], "batch size must be an int >= 2, got 1"),
        (["--append"], "--append adds rows to the --out file; give --out FILE"),
        (["--model", "no-such-org/no-such-model"], "bad parameter model='no-such-org/no-such-model'"),
        (["--model", "bert-tiny-random", "no-such-org/m"], "bad parameter model='no-such-org/m'"),
        (["--data", "{tmp}/objects.npy"], "objects.npy is not an array of token counts (it holds Python objects"),
        (["--data", "{tmp}/junk.npy"], "junk.npy is not an array of token counts"),
        (["--data", "{tmp}/text.npy"], "text.npy holds a <U1 array of shape (2,); expected a 1-D array"),
        (["--data", "{tmp}/zeros.npy"], "zeros.npy holds a int64 array"),
        (["--data", "{tmp}/missing.npy"], "missing.npy: no such file"),
        (["--data", "{tmp}/missing"], "missing: no such folder"),
    ],
)
def test_bench_refuses_before_reading_or_measuring(argv, says, npys, capsys, no_measuring):
    argv = [a.replace("{tmp}", str(npys)) for a in argv]
    assert main(["bench", *TINY, *argv]) == 2
    one_error_line(capsys, says)


def _fake_measure_then(signum, calls):
    """A measure that returns a row twice, then sends ``signum`` to this process (as Ctrl-C or kill would)."""

    def measure(variant, model, length, *a, **k):
        calls.append(variant)
        if len(calls) == 3:
            os.kill(os.getpid(), signum)
        return {"step_mode": "eager", "step_time_ms_median": 1.0, "peak_memory_mb": 0, "padding_fraction": 0.1}

    return measure


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_bench_says_what_it_kept(signum, code, tmp_path, capsys, monkeypatch):
    from attnpaper.bench import step

    calls, out = [], tmp_path / "bench.json"
    np.save(tmp_path / "lengths.npy", np.arange(10, 300))
    monkeypatch.setattr(step, "measure", _fake_measure_then(signum, calls))
    before = signal.getsignal(signal.SIGTERM)
    argv = ["--variants", "baseline", "sdpa", "--repeats", "3", "--data", str(tmp_path / "lengths.npy")]
    assert main(["bench", *TINY, *argv, "--out", str(out)]) == code
    err = capsys.readouterr().err.strip()
    assert err == (
        f"interrupted ({signal.Signals(signum).name}): 2 measurement(s) made before it, kept in {out} "
        "(rerun with --append to add to it); the one in progress is lost"
    )
    assert len(json.loads(out.read_text())["rows"]) == 2 and len(calls) == 3
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.parametrize(
    "argv,says",
    [
        (["--max-length", "4", "--variants", "linear"], "--max-length 4: lengths must be ints from 8 to 512"),
        (["--max-length", "100000"], "--max-length 100000: lengths must be ints from 8 to 512"),
        (["--data", "{tmp}/text.npy"], "text.npy holds a <U1 array"),
        (["--data", "{tmp}/missing"], "missing: no such folder"),
    ],
)
def test_paper_memory_refuses_before_any_work(argv, says, npys, capsys, monkeypatch):
    from attnpaper.bench import artefacts

    def work(*a, **k):
        raise AssertionError("read or ran before the input was checked")

    for name in ("imdb_lengths_for", "run_fresh", "run_kept"):
        monkeypatch.setattr(artefacts, name, work)
    assert main(["paper-memory", *TINY, *[a.replace("{tmp}", str(npys)) for a in argv]]) == 2
    one_error_line(capsys, says)


def test_an_interrupted_paper_memory_says_what_it_kept(tmp_path, capsys, monkeypatch):
    from attnpaper.bench import artefacts, memory_cases

    def fresh(variants, argv_of, log):
        return [{"variant": v, "peak_memory_mb": None} for v in variants]

    def cases(names, argv_of, log):
        return {
            c: [{"variant": v, "peak_allocated_bytes": None, "kept_bytes": 0} for v in ("baseline", "flash")]
            for c in names
        }

    def kept(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(artefacts, "run_fresh", fresh)
    monkeypatch.setattr(memory_cases, "run_cases", cases)
    monkeypatch.setattr(artefacts, "run_kept", kept)
    np.save(tmp_path / "lengths.npy", np.arange(10, 300))
    out = tmp_path / "memory.json"
    argv = ["--data", str(tmp_path / "lengths.npy"), "--out", str(out), "--variants", "baseline", "flash"]
    assert main(["paper-memory", *TINY, *argv, "--cases", "nothing", "model"]) == 143
    err = capsys.readouterr().err.strip()
    assert (
        err == f"interrupted (SIGTERM): 2 row(s) and 2 case(s) kept in {out}; the variant or case in progress is lost"
    )
    assert main(["paper-memory", *TINY, *argv, "--cases"]) == 143  # no case asked for: rows alone
    err = capsys.readouterr().err.strip()
    assert err == f"interrupted (SIGTERM): 2 row(s) kept in {out}; the variant or case in progress is lost"


# --- sweep ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv,says",
    [
        (["--out", ""], "--out is empty; give a folder for records/ and notebooks/"),
        (["--out", "  "], "--out is empty"),
        (["--set", "num_features=1000000000", "--variants", "linear"], "must be None (d log d) or an int from 1 to"),
        (["--set", "max_steps=1"], "bad parameter max_steps=1: the run would train 1 step(s), and the table takes"),
        (
            ["--set", "epochs=0.001"],
            "bad parameter epochs=0.001: with 512 training rows at batch_size=32 the run would train 1 step(s)",
        ),
        (["--set", "model={tmp}/file.txt"], "file.txt is a file, expected a directory holding config.json"),
    ],
)
def test_sweep_refuses_before_any_run(argv, says, tmp_path, capsys, monkeypatch):
    """Each refused in one line with nothing written, in the working directory or anywhere."""
    from attnpaper.experiment import sweep

    def prepare(out):
        raise AssertionError("the output folder was prepared before the input was checked")

    monkeypatch.setattr(sweep, "prepare_out", prepare)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["sweep", "--smoke", "--seeds", "0", *argv]) == 2
    one_error_line(capsys, says)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["file.txt"]  # nothing written


def test_min_steps_is_what_the_table_refuses():
    from helpers import make_record

    from attnpaper.analysis.results import record_problem
    from attnpaper.experiment.checks import MIN_STEPS

    assert record_problem(make_record("baseline", 0, 0.9, steps=MIN_STEPS)) is None
    assert "is not a result" in record_problem(make_record("baseline", 0, 0.9, steps=MIN_STEPS - 1))


class _FakePapermill:
    """papermill whose run writes the notebook and an ok record into the staging folder, then is interrupted
    (``signum`` to this process), as Ctrl-C after the record cell would; or fails (``fail``) after the record."""

    def __init__(self, signum=None, fail=False):
        self.signum, self.fail = signum, fail

    def execute_notebook(self, notebook, output, parameters, **kw):
        import time
        from pathlib import Path

        from helpers import make_record

        from attnpaper.experiment.records import record_name, write_record
        from attnpaper.training.config import RunConfig

        cfg = RunConfig.from_dict({k: v for k, v in parameters.items() if k in RunConfig.__dataclass_fields__})
        Path(output).write_text("{}")
        rec = make_record(cfg.variant, cfg.seed, 0.9, steps=10)
        write_record(rec, Path(parameters["output_dir"]) / record_name(cfg))
        if self.fail:
            raise RuntimeError("a cell after the record failed")
        os.kill(os.getpid(), self.signum)
        time.sleep(3)  # the signal arrives meanwhile


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_record_complete_before_the_interrupt_is_kept(signum, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "papermill", _FakePapermill(signum))
    out = tmp_path / "o"
    code = main(["sweep", "--smoke", "--variants", "baseline", "--seeds", "1", "--quiet", "--out", str(out)])
    assert code == 128 + signum
    std = capsys.readouterr()
    [entry] = json.loads(std.out)
    assert entry["status"] == "ok" and Path(entry["record"]).is_file(), entry
    assert Path(entry["record"]) == out / "records" / Path(entry["record"]).name
    assert f"interrupted ({signal.Signals(signum).name}): 1 run(s) recorded" in std.err
    assert "kept baseline" in std.err and not list((out / ".staging").iterdir())


def test_a_failed_run_says_what_was_written(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "papermill", _FakePapermill(fail=True))
    out = tmp_path / "o"
    assert main(["sweep", "--smoke", "--variants", "baseline", "--seeds", "1", "--quiet", "--out", str(out)]) == 1
    [line] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("FAILED")]
    rec = next((out / "records").glob("*.json"))
    assert f"(recorded as failed in {rec}; the notebook as far as it ran: " in line, line
    assert line.endswith("; the sweep goes on)")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_while_checking_is_one_line(signum, tmp_path, monkeypatch, capsys):
    from attnpaper.experiment import checks

    def check_plan(configs, device=None):
        os.kill(os.getpid(), signum)

    monkeypatch.setattr(checks, "check_plan", check_plan)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["sweep", "--smoke", "--seeds", "0", "--out", str(tmp_path / "o")]) == 128 + signum
    assert capsys.readouterr().err.strip() == (
        f"interrupted ({signal.Signals(signum).name}): sweep stopped; records already under --out are kept; "
        "run the same command again to resume"
    )
    assert not (tmp_path / "o").exists() and signal.getsignal(signal.SIGTERM) == before


@pytest.mark.slow
def test_a_real_sweep_interrupted_after_its_record_keeps_it(tmp_path):
    """The smoke run through papermill, SIGINT once its notebook has written the record (issue 37's lost run)."""
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "attnpaper", "sweep", "--smoke", "--variants", "baseline", "--seeds", "1"]
    env = {**os.environ, "PYTHONPATH": str(root), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [*cmd, "--quiet", "--out", str(out)],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not any((out / ".staging").glob("*/*.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert "Traceback" not in stderr
    [entry] = json.loads(stdout)
    assert entry["status"] == "ok" and Path(entry["record"]).is_file(), (entry, stderr)
    assert proc.returncode in (0, 130), stderr  # 0: the run had finished before the signal came
