"""Inputs a new user tries that the happy path does not: each gets one line (exit 2) before any work, or a
correct result; records that do not belong in the table are named and left out; interrupts keep what was
done and say how to resume; a record is rerun when its data changed (issue 19, part A)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import make_record, one_error_line, own_hash_cache

from attnpaper.__main__ import main
from attnpaper.experiment.records import REQUIRED, read_record, write_record

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _hash_cache(tmp_path, monkeypatch):
    own_hash_cache(tmp_path, monkeypatch)


# --- table ----------------------------------------------------------------------------------------------


def record(variant="baseline", seed=0, accuracy=0.85, **extra):
    """A small CPU run's record (helpers.make_record with this file's sizes); extra overrides."""
    small = dict(
        train_samples=100,
        test_samples=100,
        train_time_s=10.0,
        peak_memory_mb=100.0,
        tokens_per_s=1e4,
        device="cpu x86_64",
        kernels=[],
        versions={},
        steps=30,
    )
    return make_record(variant, seed, accuracy, **(small | extra))


def write(folder, name, rec):
    write_record(rec, Path(folder) / "records" / name)


BAD = [  # (fields, what the line says)
    ({"accuracy": "high"}, "accuracy 'high' is not a number"),
    ({"seed": [1]}, "seed [1] is not an int"),
    ({"device": {"name": "gpu"}}, "device {'name': 'gpu'} is not a non-empty string"),
    ({"accuracy": float("nan")}, "accuracy nan is not a finite number"),
    ({"train_time_s": -3.0}, "train_time_s -3.0 is not a finite number in [0, inf]"),
    ({"variant": "fast"}, "unknown variant 'fast' (valid: baseline, sdpa, flash, linear, hybrid)"),
    ({"status": "done"}, "unknown status 'done' (valid: ok, failed)"),
    ({"steps": 1}, "1 training step(s) is not a result"),
]


@pytest.mark.parametrize("fields,says", BAD)
def test_table_names_a_bad_record_and_leaves_it_out(fields, says, tmp_path, capsys):
    write(tmp_path, "good.json", record(seed=0, accuracy=0.80))
    write(tmp_path, "bad.json", record(seed=1, accuracy=0.90) | fields)
    assert main(["table", str(tmp_path), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    [line] = err.strip().splitlines()
    assert line.startswith(f"skipped: record {tmp_path / 'records' / 'bad.json'}: ") and says in line
    rows = [line.split(",") for line in out.strip().splitlines()]
    header, [row] = rows[0], rows[1:]
    assert row[header.index("n")] == "1" and float(row[header.index("accuracy")]) == pytest.approx(0.80)


def test_table_names_a_non_utf8_record_with_its_path(tmp_path, capsys):
    write(tmp_path, "good.json", record())
    bad = tmp_path / "records" / "latin1.json"
    bad.write_bytes(json.dumps(record(seed=1, model="caf\u00e9"), ensure_ascii=False).encode("latin-1"))
    assert main(["table", str(tmp_path)]) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"skipped: record {bad} is not UTF-8 text (byte {bad.read_bytes().index(0xE9)}: ")
    assert len(err.splitlines()) == 1


def test_table_reads_a_folder_given_twice_once(tmp_path, capsys):
    write(tmp_path, "a.json", record(seed=0, accuracy=0.8))
    write(tmp_path, "b.json", record(seed=1, accuracy=0.9))
    assert main(["table", str(tmp_path), str(tmp_path / "records"), str(tmp_path) + "/", "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.splitlines()[1].split(",")[4] == "2"  # n: two records, not four


def test_table_says_not_evaluated_instead_of_nan(tmp_path, capsys):
    write(tmp_path, "a.json", record("baseline", 0, None))
    write(tmp_path, "b.json", record("flash", 0, None))
    write(tmp_path, "c.json", record("flash", 1, 0.9))
    assert main(["table", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "nan" not in out.lower()
    lines = {line.split()[2]: line for line in out.splitlines()[1:]}
    assert "not evaluated" in lines["baseline"] and "0.9000 (1 of 2 evaluated)" in lines["flash"]
    assert err.strip() == (
        "note: 2 ok record(s) without accuracy (run with eval=False): shown as 'not evaluated' "
        "and left out of accuracy means and paired differences"
    )


# --- bench ----------------------------------------------------------------------------------------------


@pytest.fixture
def no_measuring(monkeypatch):
    from attnpaper.bench import step

    def measure(*a, **k):
        raise AssertionError("measured before the input was checked")

    monkeypatch.setattr(step, "measure", measure)
    monkeypatch.setattr(step, "imdb_lengths", measure)


@pytest.mark.parametrize(
    "argv,says",
    [
        (["--out", "{tmp}"], "is a folder; give a file path"),
        (["--out", "{tmp}/file.txt/bench.json"], "a folder on its path is a file"),
        (["--out", ""], "--out is empty"),
        (["--repeats", "0"], "repeats must be an int >= 1, got 0"),
        (["--steps", "-1"], "steps must be an int >= 1"),
        (["--step-modes", "fast"], "unknown step mode(s) fast; valid: eager, compiled, captured"),
    ],
)
def test_bench_refuses_before_measuring(argv, says, tmp_path, capsys, no_measuring):
    (tmp_path / "file.txt").write_text("x")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["bench", "--model", "bert-tiny-random", *argv]) == 2
    one_error_line(capsys, says)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_bench_refuses_a_read_only_out(tmp_path, capsys, no_measuring):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["bench", "--out", str(ro / "bench.json")]) == 2
        one_error_line(capsys, "cannot write --out")
    finally:
        ro.chmod(0o755)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU captured runs as captured")
def test_bench_refuses_a_mode_that_would_run_eager_on_a_cpu(capsys, no_measuring):
    """On a CPU 'captured' would run eager: its rows would be eager rows averaged under another name."""
    from attnpaper.bench.step import default_step_modes

    assert main(["bench", "--model", "bert-tiny-random", "--step-modes", "eager", "captured"]) == 2
    one_error_line(capsys, "step mode(s) captured cannot run on a CPU and would run eager; give --step-modes eager")
    assert default_step_modes() == ("eager",)


# --- bundle and scaling ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv,says",
    [
        (["--out", "{tmp}/file.txt"], "is a file; give a folder"),
        (["--out", "{tmp}/file.txt/bundle"], "a folder on its path is a file"),
        (["--out", ""], "--out is empty"),
        (["--max-length", "0"], "--max-length 0: give an int from 8 to 512"),
        (["--max-length", "4"], "--max-length 4: give an int from 8 to 512 (runs take at least 8 tokens"),
        (["--max-length", "100000"], "--max-length 100000: give an int from 8 to 512"),
        (["--wheels", "{tmp}/file.txt"], "is a file; give the folder holding the wheels"),
        (["--wheels", "{tmp}/wheels"], "wheels: no such folder"),
    ],
)
def test_bundle_refuses_before_any_work(argv, says, tmp_path, capsys, monkeypatch):
    from attnpaper.experiment import bundle

    def export(*a, **k):
        raise AssertionError("the bundle was written before its arguments were checked")

    monkeypatch.setattr(bundle, "export_fp16", export)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    assert main(["bundle", *[a.replace("{tmp}", str(tmp_path)) for a in argv]]) == 2
    one_error_line(capsys, says)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]  # nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a CUDA GPU")
@pytest.mark.parametrize("argv", [["kernels"], ["model", "--lengths", "1024"], ["all", "--model-lengths", "1024"]])
def test_scaling_is_refused_at_once_on_a_cpu(argv, capsys, monkeypatch):
    from attnpaper.bench import kernels as K
    from attnpaper.bench import model as S

    def expensive(*a, **k):
        raise AssertionError("measured on a CPU")

    monkeypatch.setattr(K, "matmul_tflops", expensive)
    monkeypatch.setattr(S, "measure_step", expensive)
    assert main(["scaling", *argv]) == 2
    one_error_line(capsys, "no CUDA GPU is visible here; run it on a GPU machine")


# --- sweep: the runner, interrupts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv,says",
    [
        (["--kernel", "no-such-kernel"], "--kernel 'no-such-kernel': no such Jupyter kernel; valid:"),
        (["--notebook", "{tmp}/notes.txt"], "is not a Jupyter notebook"),
        (["--notebook", "{tmp}/empty.ipynb"], "is not a Jupyter notebook"),
        (["--notebook", "{tmp}/plain.ipynb"], "has no cell tagged 'parameters'"),
        (
            ["--notebook", "{tmp}/other-kernel.ipynb"],
            "asks for the Jupyter kernel 'no-such-kernel', which is not installed",
        ),
        (["--notebook", "{tmp}/missing.ipynb"], "not found"),
    ],
)
def test_sweep_refuses_a_bad_runner_before_any_run(argv, says, tmp_path, capsys, monkeypatch):
    import nbformat

    from attnpaper.experiment import sweep

    def run(*a, **k):
        raise AssertionError("a run started")

    monkeypatch.setattr(sweep, "_run_one", run)
    (tmp_path / "notes.txt").write_text("not a notebook")
    (tmp_path / "empty.ipynb").write_text("{}")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nbformat.write(nb, tmp_path / "plain.ipynb")
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "no-such-kernel", "display_name": "x", "language": "python"}
    nbformat.write(nb, tmp_path / "other-kernel.ipynb")
    out = tmp_path / "out"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["sweep", "--smoke", "--variants", "baseline", "--seeds", "0", "1", "--out", str(out), *argv]) == 2
    one_error_line(capsys, says)
    assert not out.exists()


def test_sigterm_is_handled_like_sigint():
    from attnpaper.experiment.sweep import _signals_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with _signals_interrupt():
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) == before  # restored afterwards


def _sweep_cmd(out, *more):
    return [
        sys.executable,
        "-m",
        "attnpaper",
        "sweep",
        "--smoke",
        "--variants",
        "baseline",
        "--seeds",
        "0",
        "--quiet",
        "--out",
        str(out),
        *more,
    ]


def _env(tmp_path):
    return {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache")}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_sweep_says_what_it_kept_and_prints_its_summary(sig, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _sweep_cmd(out), cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 300
    while not any((out / ".staging").glob("*/*.ipynb")) and time.time() < deadline:  # the run is under way
        time.sleep(0.5)
    time.sleep(3)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr
    name = signal.Signals(sig).name
    [line] = [x for x in stderr.splitlines() if x.startswith("interrupted")]
    assert (
        line.startswith(f"interrupted ({name}): 0 run(s) recorded") and "run the same command again to resume" in line
    )
    summary = json.loads(stdout)
    assert [s["status"] for s in summary] == ["interrupted"]
    assert not list((out / "claims").glob("*.claim")) and not list((out / ".staging").iterdir())
    assert not list((out / "records").glob("*.json"))  # no failed record for a run that was stopped


# --- fingerprints ---------------------------------------------------------------------------------------


def parquet_folder(root, seed=5, n=300):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from attnpaper.training import data as D

    root.mkdir(parents=True, exist_ok=True)
    for i, split in enumerate(D.SPLITS):  # two different splits: one written twice is refused
        texts, labels = D.synthetic_corpus(n, seed=seed + 1000 * i)
        pq.write_table(pa.table({"text": texts, "label": labels.tolist()}), root / f"{split}.parquet")
    return root


def test_data_fingerprint_follows_the_content(tmp_path):
    from attnpaper.experiment.fingerprint import data_fingerprint

    root = parquet_folder(tmp_path / "imdb")
    first = data_fingerprint(root)
    assert first.startswith("sha256:") and data_fingerprint(root) == first
    f = root / "train.parquet"
    st = f.stat()
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))  # the same size ...
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and the same modification time
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    assert data_fingerprint(root) != first
    assert data_fingerprint("synthetic") == "synthetic"
    assert data_fingerprint("hub") is None and data_fingerprint(tmp_path / "nowhere") is None


def test_hashes_are_cached_by_path_size_and_times(tmp_path, monkeypatch):
    from attnpaper.experiment import fingerprint as F

    f = tmp_path / "w.bin"
    f.write_bytes(b"x" * 1000)
    h = F.file_hash(f)
    assert json.loads(F.cache_path().read_text()) and h in json.loads(F.cache_path().read_text()).values()
    F._memory.clear()
    monkeypatch.setattr("builtins.open", lambda *a, **k: (_ for _ in ()).throw(AssertionError("read again")))
    assert F.file_hash(f) == h  # from the cache file, without reading the file


def test_model_fingerprint_of_a_folder_and_of_aliases(tmp_path):
    from attnpaper.experiment.fingerprint import model_fingerprint

    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"weights-1")
    (d / "README.md").write_text("notes")
    first = model_fingerprint(d)
    (d / "README.md").write_text("other notes")
    assert model_fingerprint(d) == first  # not a file that changes the run
    (d / "model.safetensors").write_bytes(b"weights-2")
    assert model_fingerprint(d) != first
    assert model_fingerprint("bert-tiny-random") == "alias:bert-tiny-random"
    assert model_fingerprint("some-org/some-model").startswith("hub:some-org/some-model")


def test_stale_compares_fingerprints_and_old_records():
    from attnpaper.experiment.fingerprint import stale

    now = {"data_fingerprint": "sha256:1", "model_fingerprint": "alias:m"}
    assert stale(dict(now), now) is None
    assert stale(now | {"data_fingerprint": "sha256:0"}, now) == "its data changed since it was recorded"
    assert stale({}, now) == "it was recorded without data and model fingerprints"  # an old record: rerun
    assert stale({}, {"data_fingerprint": None, "model_fingerprint": None}) is None  # nothing to compare: kept


def test_records_carry_fingerprints_and_old_ones_still_read(tmp_path):
    from attnpaper.experiment.records import new_record
    from attnpaper.training.config import SMOKE, RunConfig

    root = parquet_folder(tmp_path / "imdb")
    rec = new_record(RunConfig(**{**SMOKE, "data": str(root)}))
    assert rec["data_fingerprint"].startswith("sha256:") and rec["model_fingerprint"] == "alias:bert-tiny-random"
    assert "data_fingerprint" not in REQUIRED and "model_fingerprint" not in REQUIRED
    write_record(record(), tmp_path / "old.json")
    assert "data_fingerprint" not in read_record(tmp_path / "old.json")


@pytest.mark.slow
def test_replacing_the_parquet_files_reruns_the_sweep(tmp_path):
    out, root = tmp_path / "out", parquet_folder(tmp_path / "imdb", seed=5)
    cmd = _sweep_cmd(
        out, "--set", f"data={root}", "--set", "epochs=1", "--set", "train_samples=128", "--set", "test_samples=64"
    )

    def run():
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return [s["status"] for s in json.loads(proc.stdout)], proc.stderr

    assert run()[0] == ["ok"]
    [path] = (out / "records").glob("*.json")
    first = read_record(path)["data_fingerprint"]
    assert first.startswith("sha256:")
    assert run()[0] == ["skipped"]
    parquet_folder(root, seed=6)  # other reviews, the same folder and file names
    statuses, err = run()
    assert statuses == ["ok"] and f"rerun {path.name}: its data changed since it was recorded" in err
    assert read_record(path)["data_fingerprint"] not in (None, first)
