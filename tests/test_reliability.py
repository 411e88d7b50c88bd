"""Runs that survive faults: resume after a kill, damaged files, a full disk, two sweeps, bad input."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from attnpaper.experiment.records import read_record, record_name, save_result, write_record
from attnpaper.experiment.run import run_and_record
from attnpaper.training.config import SMOKE, RunConfig

ROOT = Path(__file__).resolve().parent.parent
# 256 rows in batches of 8: 32 steps an epoch, 96 in all; a checkpoint every 10 steps and at 32, 64, 96
RESUMABLE = {**SMOKE, "batch_size": 8, "checkpoint_every": 10, "test_samples": 64}
KILLER = textwrap.dedent("""
    import json, os, signal, sys
    from attnpaper.training import checkpoint as C
    from attnpaper.training.config import RunConfig
    from attnpaper.experiment.run import run_and_record
    saves, save = [], C.Checkpoint.save
    def save_then_die(self, state):  # SIGKILL right after the second checkpoint: mid-training
        save(self, state)
        saves.append(state["step"])
        if len(saves) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    C.Checkpoint.save = save_then_die
    run_and_record(RunConfig.from_dict(json.loads(sys.argv[1])), sys.argv[2], checkpoint_dir=sys.argv[3],
                   progress=False)
""")


def killed_run(cfg, out, ckpt_dir):
    """Run cfg in a child process that is SIGKILLed after its second checkpoint."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, json.dumps(cfg.to_dict()), str(out), str(ckpt_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    return Path(ckpt_dir) / record_name(cfg).replace(".json", ".ckpt")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    cfg = RunConfig(**RESUMABLE)
    return run_and_record(cfg, tmp_path_factory.mktemp("whole"), progress=False)


@pytest.mark.slow
def test_killed_run_resumes_bitwise(tmp_path, uninterrupted):
    cfg = RunConfig(**RESUMABLE)
    ckpt = killed_run(cfg, tmp_path / "records", tmp_path / "checkpoints")
    assert ckpt.exists() and not (tmp_path / "records" / record_name(cfg)).exists()
    rec = run_and_record(cfg, tmp_path / "records", progress=False)
    assert rec["resumed_from_step"] == 20 and uninterrupted["resumed_from_step"] == 0
    for key in ("accuracy", "loss_every_50_steps", "steps", "padding_fraction"):
        assert rec[key] == uninterrupted[key], key  # bitwise: the same floats
    assert not ckpt.exists()  # removed once the record was written
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == []


@pytest.mark.slow
def test_fresh_ignores_and_keep_keeps_the_checkpoint(tmp_path):
    cfg = RunConfig(**{**RESUMABLE, "epochs": 1})
    ckpt = killed_run(cfg, tmp_path / "records", tmp_path / "checkpoints")
    rec = run_and_record(cfg, tmp_path / "records", fresh=True, keep_checkpoint=True, progress=False)
    assert rec["resumed_from_step"] == 0
    assert ckpt.exists()  # kept on request: the end-of-training state


@pytest.mark.slow
def test_corrupt_checkpoint_is_reported_and_the_run_starts_over(tmp_path, capfd):
    cfg = RunConfig(**{**RESUMABLE, "epochs": 1})
    ckpt = tmp_path / "checkpoints" / record_name(cfg).replace(".json", ".ckpt")
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    rec = run_and_record(cfg, tmp_path / "records", progress=False)
    err = capfd.readouterr().err
    assert rec["status"] == "ok" and rec["resumed_from_step"] == 0
    assert f"checkpoint {ckpt} cannot be used" in err and "starting from step 0" in err
    assert ckpt.with_suffix(".corrupt").exists()


def test_failed_rerun_keeps_the_ok_record(tmp_path):
    cfg = RunConfig(**SMOKE)
    path = tmp_path / record_name(cfg)
    ok = {**_record(cfg), "status": "ok", "accuracy": 0.9}
    write_record(ok, path)
    failed = {**_record(cfg), "status": "failed", "error": "RuntimeError: boom"}
    assert save_result(failed, path).startswith("kept the previous ok record")
    rec = read_record(path)
    assert rec["status"] == "ok" and rec["accuracy"] == 0.9
    assert rec["history"][0]["error"] == "RuntimeError: boom"


def _record(cfg):
    from attnpaper.experiment.records import REQUIRED

    return {k: None for k in REQUIRED} | cfg.to_dict() | {"config_hash": cfg.config_hash(), "kernels": []}


# --- damaged output folders, full disks, two sweeps -------------------------------------------------------


def quiet_sweep(*args, **kwargs):
    from attnpaper.experiment.sweep import sweep

    log = kwargs.pop("log", [])
    return sweep(*args, log=log.append, **kwargs)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("swept")
    summary = quiet_sweep(["baseline", "linear"], [0], out, smoke=True)
    assert [s["status"] for s in summary] == ["ok", "ok"]
    return out, summary


@pytest.mark.slow
def test_truncated_record_and_zero_byte_temp_are_reported_and_redone(swept, capsys):
    from attnpaper.__main__ import main

    out, summary = swept
    bad = Path(summary[0]["record"])
    bad.write_text(bad.read_text()[:300])  # truncated, as a kill mid-write on a plain writer would leave
    tmp = out / "records" / f".tmp-999999@{socket.gethostname()}@baseline.json"  # a dead writer's
    tmp.write_text("")
    assert main(["table", str(out)]) == 0  # the table shows what is readable and names the damaged file
    err = capsys.readouterr().err
    assert f"skipped: record {bad} is not valid JSON" in err and ".tmp-" not in err
    log = []
    again = quiet_sweep(["baseline", "linear"], [0], out, smoke=True, log=log)
    assert [s["status"] for s in again] == ["ok", "skipped"]
    assert any(f"corrupt record {bad}" in line and "running it again" in line for line in log)
    assert read_record(bad)["status"] == "ok" and (out / "corrupt" / bad.name).exists()
    assert not tmp.exists()  # cleaned up


@pytest.mark.slow
def test_full_disk_leaves_no_partial_file_and_stops_in_one_line(swept, monkeypatch, capsys):
    import attnpaper.experiment.sweep as S
    from attnpaper.__main__ import main

    out, summary = swept
    before = {p: p.read_bytes() for p in (out / "records").glob("*.json")}

    def disk_full(rec, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(S, "write_record", disk_full)
    rc = main(["sweep", "--smoke", "--variants", "flash", "--seeds", "0", "--out", str(out)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert rc == 1 and len(err) == 1 and "No space left on device" in err[0] and "intact" in err[0]
    assert {p: p.read_bytes() for p in (out / "records").glob("*.json")} == before
    assert not list((out / "notebooks").glob("flash*")) and not list(out.rglob(".tmp-*"))
    assert not any((out / ".staging").iterdir())


def test_write_atomic_removes_its_temp_file_when_the_disk_is_full(tmp_path, monkeypatch):
    import attnpaper.experiment.records as R

    path = tmp_path / "r.json"
    path.write_text('{"old": true}')

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(R.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        R.write_record({"new": True}, path)
    assert path.read_text() == '{"old": true}' and [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.slow
def test_two_sweeps_into_one_folder_run_each_configuration_once(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "attnpaper",
        "sweep",
        "--smoke",
        "--variants",
        "baseline",
        "linear",
        "--seeds",
        "0",
        "1",
        "--out",
        str(tmp_path),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    results = [p.communicate(timeout=900) for p in procs]
    said = [
        [line for line in r[1].splitlines() if line.startswith(("run ", "skip", "FAILED", "error", "interrupted"))]
        for r in results
    ]
    assert [p.returncode for p in procs] == [0, 0], (said, [r[1][-800:] for r in results])
    runs = [json.loads(r[0]) for r in results]
    ok = [s["record"] for summary in runs for s in summary if s["status"] == "ok"]
    assert len(ok) == 4 and len(set(ok)) == 4  # every configuration ran exactly once
    assert all(s["status"] in ("ok", "claimed", "skipped") for summary in runs for s in summary)
    assert len(list((tmp_path / "records").glob("*.json"))) == 4
    assert not list((tmp_path / "claims").glob("*.claim"))


def test_stale_claim_is_taken_over_and_a_live_one_is_not(tmp_path):
    from attnpaper.experiment.claims import Claim

    mine = Claim(tmp_path, "run")
    assert mine.acquire()
    other = Claim(tmp_path, "run")
    assert not other.acquire() and other.holder["pid"] == os.getpid()
    mine.release()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    info = {"host": mine.info["host"], "pid": int(dead.stdout), "slot": "cpu", "started": "then"}
    (tmp_path / "run.claim").write_text(json.dumps(info))
    taker = Claim(tmp_path, "run", slot="cpu")
    assert taker.acquire() and taker.took_over == info
    sharer = Claim(tmp_path, "other", slot="cpu")
    assert sharer.acquire() and len(sharer.sharing()) == 1  # two runs on one device: not solo timings
    sharer.release()
    taker.release()
    assert not list(tmp_path.glob("*.claim"))


# --- bad input: one line, exit 2, nothing run -------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    """Folders of parquet files that are each wrong in one way."""
    root = tmp_path_factory.mktemp("bad-data")

    def write(name, train, test=None):
        d = root / name
        d.mkdir()
        pq.write_table(train, d / "train.parquet")
        pq.write_table(test if test is not None else train, d / "test.parquet")
        return str(d)

    good = pa.table({"text": ["a fine film", "dull"], "label": [1, 0]})
    return {
        "empty": write("empty", good.slice(0, 0)),
        "null": write("null", pa.table({"text": ["ok", None, "fine"], "label": [1, 0, 1]})),
        "labels": write("labels", pa.table({"text": ["a", "b"], "label": [1, 2]})),
        "schema": write("schema", pa.table({"review": ["a"], "sentiment": [1]})),
        "types": write("types", pa.table({"text": [1, 2], "label": [1, 0]})),
        "no-test": str(Path(write("no-test", good)).parent / "no-test"),
    }


def run_cli(args, tmp_path, capsys):
    from attnpaper.__main__ import main

    out = tmp_path / "out"
    try:
        rc = main(["sweep", "--smoke", "--variants", "baseline", "--seeds", "0", "--out", str(out), *args])
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    ran = out.exists() and any((out / "notebooks").glob("*.ipynb"))
    return rc, err, ran


CLI_CASES = [
    (["--set", "lr=inf"], "bad parameter lr='inf': must be a finite number"),
    (["--set", "lr=1e999"], "bad parameter lr=inf: must be a finite number"),
    (["--set", "epochs=1e999"], "bad parameter epochs=inf"),
    (["--set", "weight_decay=-1"], "bad parameter weight_decay=-1: must be >= 0"),
    (["--set", "redraw_every=-1"], "bad parameter redraw_every=-1"),
    (["--set", "eval='no'"], "bad parameter eval='no': must be True or False"),
    (["--set", "num_features=True"], "bad parameter num_features=True"),
    (["--set", "max_grad_norm=0"], "bad parameter max_grad_norm=0"),
    (["--set", "checkpoint_every=-5"], "bad parameter checkpoint_every=-5"),
    (["--set", "variant=flash"], "--set variant=... is not allowed: give variants with --variants"),
    (["--set", "seed=3"], "--set seed=... is not allowed: give seeds with --seeds"),
    (["--set", "learning_rate=1e-4"], "unknown parameter(s) learning_rate"),
    (["--set", "lr"], "--set takes name=value"),
    (["--seeds", "abc"], "argument --seeds: invalid int value: 'abc'"),
    (["--seeds", "-1"], "bad seed -1"),
    (["--set", "max_length=1000"], "bad parameter max_length=1000: the model has 512 positions"),
    (["--set", "hybrid_layers=1"], "hybrid_layers=1: applies to the hybrid variant only"),
    (
        ["--variants", "hybrid", "--set", "hybrid_layers=9"],
        "bad parameter hybrid_layers=9: must be None or an int in [0, 2]",
    ),
    (
        ["--variants", "flash", "--set", "flash_backend='varlen'"],
        "bad parameter flash_backend='varlen': needs a CUDA GPU",
    ),
    (
        ["--variants", "flash", "--set", "flash_backend='nomask'"],
        "bad parameter flash_backend='nomask': it attends the padding of padded batches",
    ),
    (
        ["--variants", "linear", "--set", "layout='padded'", "--set", "flash_backend='nomask'"],
        "bad parameter flash_backend='nomask': it is an arm of the flash variant, not of 'linear'",
    ),
    (["--set", "step_mode='turbo'"], "bad parameter step_mode='turbo'"),
    (["--set", "data=/nowhere/imdb"], "IMDb data directory /nowhere/imdb does not exist"),
    (["--set", "model=/nowhere/model"], "model directory /nowhere/model does not exist"),
    (["--set", "model=./no-such-model"], "model directory ./no-such-model does not exist"),
    (["--notebook", "/nowhere/07.ipynb"], "experiment notebook /nowhere/07.ipynb not found"),
]


@pytest.mark.parametrize("args, words", CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_cli_bad_input_is_one_line_exit_2_and_nothing_runs(args, words, tmp_path, capsys):
    rc, err, ran = run_cli(args, tmp_path, capsys)
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and words in err[0], err
    assert not ran


@pytest.mark.parametrize(
    "case, words",
    [
        ("empty", "has no rows"),
        ("null", "column text has 1 empty (null) value(s), the first in row 1"),
        ("labels", "labels must be 0 or 1, found [1, 2]"),
        ("schema", "lacks column(s) text, label"),
        ("types", "column text must hold strings"),
        ("no-test", "missing split 'test'"),
    ],
)
def test_cli_bad_data_is_named_before_any_run(case, words, bad_data, tmp_path, capsys):
    if case == "no-test":
        (Path(bad_data[case]) / "test.parquet").unlink(missing_ok=True)
    rc, err, ran = run_cli(["--set", f"data={bad_data[case]}"], tmp_path, capsys)
    assert rc == 2 and len(err) == 1 and words in err[0] and bad_data[case] in err[0], err
    assert not ran


def test_cli_out_must_be_a_writable_folder(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    for out, words in ((afile, "is a file; give a folder"), (Path("/proc/self/status"), "is a file")):
        rc, err, _ = run_cli(["--out", str(out)], tmp_path, capsys)
        assert rc == 2 and len(err) == 1 and words in err[0], err
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):  # root writes anywhere: nothing to test
            pytest.skip("running as root: a read-only folder is writable")
        rc, err, _ = run_cli(["--out", str(ro / "out")], tmp_path, capsys)
        assert rc == 2 and len(err) == 1 and "cannot write to" in err[0], err
    finally:
        ro.chmod(0o755)


def test_cli_table_of_nothing_is_one_line(tmp_path, capsys):
    from attnpaper.__main__ import main

    assert main(["table", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: no records (*.json) under {tmp_path}"


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: RunConfig(lr=float("inf")).validate(), "bad parameter lr=inf: must be a finite number"),
        (lambda: RunConfig(weight_decay=float("nan")).validate(), "bad parameter weight_decay=nan"),
        (lambda: RunConfig(seed="abc").validate(), "bad parameter seed='abc': must be an int in [0"),
        (lambda: RunConfig(eval="no").validate(), "bad parameter eval='no'"),
        (lambda: RunConfig(redraw_every=-1).validate(), "bad parameter redraw_every=-1"),
        (lambda: RunConfig(variant="linear", attention_dropout=0.1).validate(), "no probability matrix"),
        (
            lambda: _build("linear", num_features=True),
            "bad option num_features=True: must be None (d log d) or an int from 1 to 4096",
        ),
        (lambda: _build("baseline", num_labels=0), "num_labels must be an int >= 1"),
        (lambda: _build("baseline", model="/nowhere/model"), "model directory /nowhere/model does not exist"),
        (lambda: _splits("/nowhere/imdb"), "IMDb data directory /nowhere/imdb does not exist"),
        (lambda: _splits("/nowhere/tokens.npz"), "token cache /nowhere/tokens.npz does not exist"),
        (lambda: _plan(model="nowhere-org/no-such-model"), "bad parameter model='nowhere-org/no-such-model'"),
    ],
)
def test_api_bad_input_raises_value_error(call, words):
    with pytest.raises(ValueError) as err:
        call()
    assert words in str(err.value) and "\n" not in str(err.value)


def test_api_bad_data_files(bad_data):
    from attnpaper.experiment.checks import check_data

    for case, words in (("empty", "has no rows"), ("null", "the first in row 1"), ("labels", "must be 0 or 1")):
        with pytest.raises(ValueError, match=words):
            _splits(bad_data[case])
        with pytest.raises(ValueError, match=words):
            check_data(bad_data[case])


def _build(variant, model="bert-tiny-random", **kw):
    from attnpaper.model.build import build_model

    return build_model(model, variant, **kw)


def _splits(source):
    from attnpaper.training.data import load_splits
    from attnpaper.training.loop import load_tokenizer

    return load_splits(source, load_tokenizer("bert-tiny-random"), 64)


def _plan(**overrides):
    from attnpaper.experiment.sweep import plan

    return plan(["baseline"], [0], overrides, smoke=True)


def test_plan_checks_every_run_before_any(monkeypatch):
    import attnpaper.experiment.checks as K

    seen, resolve_data = [], K.resolve_data
    monkeypatch.setattr(K, "resolve_data", lambda source: seen.append(source) or resolve_data(source))
    configs = _plan()
    assert len(configs) == 1 and seen == ["synthetic"]
    with pytest.raises(ValueError, match="hybrid_layers=5"):  # the model (2 layers) is read once, no weights
        from attnpaper.experiment.sweep import plan

        plan(["hybrid"], [0, 1], {"hybrid_layers": 5}, smoke=True)


def test_token_cache_checked_up_front(tmp_path):
    from attnpaper.experiment.checks import check_data

    bad = tmp_path / "tokens.npz"
    np.savez(bad, meta=np.array("{}"))
    with pytest.raises(ValueError, match="lacks train_ids"):
        check_data(str(bad))


def test_checkpoint_written_in_background_holds_the_state_at_store(tmp_path):
    """store() snapshots the state: changes made while the file is written never reach it; a failed
    write is raised at the next call."""
    import torch

    from attnpaper.training.checkpoint import Checkpoint

    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    ckpt = Checkpoint(tmp_path / "run.ckpt", {"a": 1}, every=1)
    before = model.weight.detach().clone()
    ckpt.store(
        "plan",
        {"step": 3, "real_tokens": 0, "slot_tokens": 0, "losses": [], "train_time_s": 0.0},
        model,
        opt,
        sched,
        scaler,
        [],
    )
    with torch.no_grad():
        model.weight.add_(1.0)  # training goes on while the file is written
    saved = ckpt.load("plan")
    assert saved["step"] == 3 and torch.equal(saved["model"]["params"]["weight"], before)
    (tmp_path / "file").write_text("")
    bad = Checkpoint(tmp_path / "file" / "run.ckpt", {"a": 1}, every=1)  # its folder is a file
    bad.store(
        "plan",
        {"step": 1, "real_tokens": 0, "slot_tokens": 0, "losses": [], "train_time_s": 0.0},
        model,
        opt,
        sched,
        scaler,
        [],
    )
    with pytest.raises(OSError):
        bad.wait()
    bad.wait()  # raised once


def test_a_store_during_a_write_does_not_wait_and_the_newest_state_is_written_next(tmp_path, monkeypatch):
    """store() while the previous write is under way returns at once; the newest waiting state is written
    after it (an older one waiting is skipped), and wait() returns once the file holds the newest."""
    import time

    import torch

    from attnpaper.training.checkpoint import Checkpoint

    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    ckpt = Checkpoint(tmp_path / "run.ckpt", {"a": 1}, every=1)
    written, real_save = [], Checkpoint.save

    def slow_save(self, state):
        time.sleep(0.4)
        real_save(self, state)
        written.append(state["step"])

    monkeypatch.setattr(Checkpoint, "save", slow_save)
    progress = {"real_tokens": 0, "slot_tokens": 0, "losses": [], "train_time_s": 0.0}
    t0 = time.perf_counter()
    for step in (1, 2, 3):
        ckpt.store("plan", {"step": step, **progress}, model, opt, sched, scaler, [])
    assert time.perf_counter() - t0 < 0.3  # three stores, none waited for the 0.4 s write
    ckpt.wait()
    assert written == [1, 3]
    assert ckpt.load("plan")["step"] == 3
    ckpt.store("plan", {"step": 4, **progress}, model, opt, sched, scaler, [])  # after the writer ended: a new one
    ckpt.wait()
    assert written == [1, 3, 4]
