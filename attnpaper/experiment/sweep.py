"""Run the experiment notebook once per (variant, seed) with papermill, each in its own kernel process.

Layout of an output folder ``out``: ``records/`` (one JSON per run), ``notebooks/`` (the executed
notebooks), ``checkpoints/`` (of unfinished runs), ``claims/`` (runs in progress), ``corrupt/``
(damaged records set aside) and ``.staging/`` (a run's files until they are complete). A run is
claimed before it starts, writes into its staging folder, and only a whole, ok record and notebook
are moved into place; a failed rerun never replaces an ok record.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from ..files import checkout_root, clean_temp, pid_alive, write_atomic
from ..files import signals_interrupt as _signals_interrupt
from ..training.clock import LAUNCH_ENV
from ..training.config import SMOKE, RunConfig
from .claims import Claim
from .fingerprint import fingerprints, stale
from .records import new_record, read_record, record_name, save_result, write_record

NOTEBOOK = checkout_root() / "chapters" / "07_experiment.ipynb"
PLAN_KEYS = ("variant", "seed")  # set by --variants/--seeds, never by overrides
FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
"""Write errors that every later run would hit too: the sweep stops cleanly on them."""
FOLDERS = ("records", "notebooks", "checkpoints", "claims", ".staging")


class SweepStopped(RuntimeError):
    """The sweep cannot go on (the output folder cannot be written); results so far are intact."""


class SweepInterrupted(Exception):
    """SIGINT or SIGTERM stopped the sweep; ``summary`` holds the runs so far, the stopped one included."""

    def __init__(self, message: str, summary: list[dict]):
        super().__init__(message)
        self.summary = summary


def check_runner(notebook, kernel_name=None) -> Path:
    """The notebook is a Jupyter notebook with a cell tagged 'parameters', and the kernel exists.

    ValueError in one line otherwise, before any run: each run would otherwise fail the same way.
    """
    import nbformat

    notebook = Path(notebook)
    if not notebook.is_file():
        raise ValueError(f"experiment notebook {notebook} not found; pass --notebook PATH (an .ipynb file)")
    try:
        nb = nbformat.read(notebook, as_version=4)
    except Exception as err:  # nbformat raises JSON, validation and decoding errors alike
        raise ValueError(
            f"--notebook {notebook} is not a Jupyter notebook ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0][:160] if str(err).strip() else ''}); "
            "pass the experiment notebook, chapters/07_experiment.ipynb"
        ) from None
    if not _parameters_cells(nb):
        raise ValueError(
            f"--notebook {notebook} has no cell tagged 'parameters', so papermill could not set "
            "the run's parameters; pass the experiment notebook, chapters/07_experiment.ipynb"
        )
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    if kernel_name is not None and kernel_name not in specs:
        raise ValueError(f"--kernel {kernel_name!r}: no such Jupyter kernel; valid: {', '.join(sorted(specs))}")
    wanted = nb.metadata.get("kernelspec", {}).get("name")
    if kernel_name is None and wanted and wanted not in specs:
        raise ValueError(
            f"--notebook {notebook} asks for the Jupyter kernel {wanted!r}, which is not installed; "
            f"pass --kernel, one of: {', '.join(sorted(specs))}"
        )
    return notebook


def plan(variants, seeds, overrides=None, smoke=False, check=True) -> list[RunConfig]:
    """Validated configurations for every (variant, seed); raises ValueError before anything runs.

    check: also check the data source, the model and the device for the whole plan (attnpaper.experiment.checks).
    """
    overrides = dict(overrides or {})
    for key in PLAN_KEYS:
        if key in overrides:
            raise ValueError(f"--set {key}=... is not allowed: give {key}s with --{key}s")
    variants, seeds = list(variants or []), list(seeds or [])
    if not variants or not seeds:
        raise ValueError("nothing to run: give at least one variant and one seed")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"bad seed {s!r}: seeds are ints >= 0")
    base = {**(SMOKE if smoke else {}), **overrides}
    configs = [RunConfig.from_dict({**base, "variant": v, "seed": s}).validate() for v in variants for s in seeds]
    if check:
        from .checks import check_plan

        check_plan(configs)
    return configs


def check_out(out) -> Path:
    """``out`` names a folder: empty (which would scatter records/, notebooks/, ... into the working
    directory) or a file is refused in one line, before any check that reads data."""
    if out is None or not str(out).strip():
        raise ValueError("--out is empty; give a folder for records/ and notebooks/, e.g. results/local")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder (it will hold records/ and notebooks/)")
    return out


def prepare_out(out) -> Path:
    """Create the output folders and check they can be written (ValueError in one line if not)."""
    out = check_out(out)
    for name in FOLDERS:
        d = out / name
        try:
            d.mkdir(parents=True, exist_ok=True)
            probe = write_atomic(d / f".probe-{os.getpid()}", "ok")
            probe.unlink()
        except OSError as err:
            raise ValueError(f"cannot write to {d}: {err.strerror or err}; give a writable --out folder") from None
    for name in FOLDERS[:3]:
        clean_temp(out / name)
    for d in (out / ".staging").iterdir():  # staging folders of dead processes on this host
        pid, _, host = d.name.partition("@")
        if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
    return out


def _done(rec_path, out, log, current=None) -> bool:
    """True when an ok record exists whose data and model fingerprints match ``current`` (see
    fingerprint.stale); a corrupt record is set aside (corrupt/) and reported."""
    if not rec_path.exists():
        return False
    try:
        rec = read_record(rec_path)
    except (ValueError, OSError) as err:
        aside = out / "corrupt" / rec_path.name
        aside.parent.mkdir(exist_ok=True)
        os.replace(rec_path, aside)
        log(f"corrupt record {rec_path} ({str(err)[:120]}): moved to {aside}; running it again")
        return False
    if rec["status"] != "ok":
        return False
    why = stale(rec, current or {})
    if why:
        log(f"rerun {rec_path.name}: {why}")
        return False
    return True


def _write_error(err) -> OSError | None:
    """The OSError behind ``err`` if it is one every later write would hit too (disk full, permissions)."""
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in FATAL_ERRNOS:
            return seen
        seen = seen.__cause__ or seen.__context__
    text = str(err)
    for code in FATAL_ERRNOS:
        if f"[Errno {code}]" in text:
            return OSError(code, os.strerror(code))
    return None


@contextlib.contextmanager
def _stop_on_write_error(what: str):
    """An OSError every later run would hit too becomes SweepStopped ('cannot write ...: why; what')."""
    try:
        yield
    except OSError as err:
        if _write_error(err) is not None:
            raise SweepStopped(
                f"cannot write {err.filename or 'the output folder'}: {err.strerror}; "
                f"{what} (earlier results are intact)"
            ) from None
        raise


def _last_line(err) -> str:
    text = str(err).strip()
    return text.splitlines()[-1] if text else type(err).__name__


def sweep(
    variants,
    seeds,
    out,
    overrides=None,
    smoke=False,
    force=False,
    notebook=NOTEBOOK,
    kernel_name=None,
    log=print,
    fresh=False,
    keep_checkpoints=False,
    stream=False,
    reuse_kernel=False,
) -> list[dict]:
    """Execute ``notebook`` for each configuration; records go to out/records, notebooks to out/notebooks.

    A run whose record exists with status ok is skipped unless force, or unless the content of its data
    or model files changed since (data_fingerprint, model_fingerprint; a record from before these fields
    counts as matching only where they cannot be computed, e.g. the hub's IMDb); a run another live process
    has claimed is skipped. A killed run resumes from its checkpoint (unless ``fresh``). A failed
    run is recorded as failed with its error (never over an ok record) and the sweep goes on; a
    write error that every run would hit stops it (SweepStopped). Before each run a line says how
    far the sweep is (runs done and left, elapsed, an estimate of the rest); ``stream`` also passes
    each run's own output (its progress bars) through as it comes. Returns one summary dict per run.

    A bad notebook or kernel is refused (ValueError) before any run. SIGINT or SIGTERM stops the run
    in progress (its kernel is killed; its checkpoint stays) and raises SweepInterrupted, whose
    summary lists the runs so far; records already written are kept, and the same call resumes.

    ``reuse_kernel``: one kernel runs the runs one after another (imports and compiled code stay warm),
    each told its launch (the notebook's ``launched_at``); a failed run, or one that leaves more than
    LEFT_LIMIT_MB allocated on the GPU, ends that kernel and the next run starts a fresh one, so no run's
    peak holds an earlier run's tensors. Each record says ``runs_before_in_process``.
    """
    import papermill as pm

    check_out(out)
    configs = plan(variants, seeds, overrides, smoke)
    check_runner(notebook, kernel_name)
    kernel = _Kernel(notebook, kernel_name) if reuse_kernel else None
    out = prepare_out(out)
    if stream:
        _stream_papermill_output()
    summary = []
    try:
        with _signals_interrupt():
            _sweep_loop(
                pm, configs, out, summary, force, notebook, kernel_name, log, fresh, keep_checkpoints, stream, kernel
            )
    except KeyboardInterrupt as err:
        why = str(err) or "SIGINT"
        kept = sum(r["status"] == "ok" for r in summary)
        stopped = [r for r in summary if r["status"] == "interrupted"]
        what = f"; {Path(stopped[0]['record']).stem} was stopped (its checkpoint, if any, is kept)" if stopped else ""
        raise SweepInterrupted(
            f"interrupted ({why}): {kept} run(s) recorded in this sweep and every earlier record "
            f"under {out / 'records'} are kept{what}; run the same command again to resume",
            summary,
        ) from None
    finally:
        if kernel is not None:
            kernel.drop()
    return summary


def _sweep_loop(pm, configs, out, summary, force, notebook, kernel_name, log, fresh, keep_checkpoints, stream, kernel):
    """The runs of ``sweep``, appended to ``summary`` as they finish (a run stopped by a signal: 'interrupted')."""
    start, ran, prints = time.perf_counter(), [], {}
    for i, cfg in enumerate(configs):
        rec_path = out / "records" / record_name(cfg)
        nb_path = out / "notebooks" / rec_path.with_suffix(".ipynb").name
        if (cfg.data, cfg.model) not in prints:  # hashed once per sweep (and cached across sweeps)
            prints[cfg.data, cfg.model] = fingerprints(cfg)
        if not force and _done(rec_path, out, log, prints[cfg.data, cfg.model]):
            log(f"skip {rec_path.name}: already recorded (use --force to rerun)")
            summary.append({"record": str(rec_path), "status": "skipped"})
            continue
        claim = Claim(out / "claims", rec_path.stem)
        if not claim.acquire():
            log(f"skip {rec_path.name}: claimed by {claim.holder} (another sweep is running it)")
            summary.append({"record": str(rec_path), "status": "claimed"})
            continue
        if not force and _done(rec_path, out, log, prints[cfg.data, cfg.model]):  # recorded while we looked
            claim.release()
            log(f"skip {rec_path.name}: recorded by another sweep meanwhile")
            summary.append({"record": str(rec_path), "status": "skipped"})
            continue
        if claim.took_over:
            log(f"took over the stale claim of {claim.took_over} on {rec_path.name}")
        stage = out / ".staging" / f"{os.getpid()}@{socket.gethostname()}"
        log(_progress(i, len(configs), summary, time.perf_counter() - start, ran))
        try:
            summary.append(
                _run_one(
                    pm,
                    cfg,
                    out,
                    rec_path,
                    nb_path,
                    stage,
                    claim,
                    notebook,
                    kernel_name,
                    log,
                    fresh,
                    keep_checkpoints,
                    stream,
                    kernel,
                )
            )
            ran.append(summary[-1]["wall_s"])
        except KeyboardInterrupt as err:  # a run whose record was complete is kept (_run_one), the others stopped
            summary.append(getattr(err, "kept", None) or {"record": str(rec_path), "status": "interrupted"})
            raise
        finally:
            claim.release()
            shutil.rmtree(stage, ignore_errors=True)


def _progress(i, total, summary, elapsed, walls) -> str:
    """'[3/10] 2 ok, 0 failed, 0 skipped; 4m10s elapsed, about 9m left'."""

    def fmt(s):
        return f"{int(s // 60)}m{int(s % 60):02d}s"

    count = {k: sum(r["status"] == k for r in summary) for k in ("ok", "failed", "skipped", "claimed")}
    left = total - i
    eta = f", about {fmt(left * sum(walls) / len(walls))} left" if walls else ""
    done = ", ".join(f"{n} {k}" for k, n in count.items() if n or k in ("ok", "failed"))
    return f"[{i + 1}/{total}] {done}; {fmt(elapsed)} elapsed{eta}"


def _stream_papermill_output():
    """Send papermill's log (each run's cell output, as it comes) to stderr."""
    import logging

    logger = logging.getLogger("papermill")
    if not any(getattr(h, "_attnpaper", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._attnpaper = True
        handler.setFormatter(logging.Formatter("  | %(message)s"))
        handler.addFilter(lambda r: not r.getMessage().startswith(("Executing Cell", "Ending Cell")))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _run_one(pm, cfg, out, rec_path, nb_path, stage, claim, notebook, kernel_name, log, fresh, keep, stream, kernel):
    """One run through papermill into ``stage``; moved into place when whole. Interrupted after its record
    was written (ok), the run is kept: the KeyboardInterrupt carries its summary entry as ``kept``.
    ``kernel`` (a _Kernel, or None for a fresh kernel per run) is ended after a failure or a run that left
    GPU memory allocated."""
    stage.mkdir(parents=True, exist_ok=True)
    staged_rec, staged_nb = stage / rec_path.name, stage / nb_path.name
    ckpt_dir = out / "checkpoints"
    params = {
        **cfg.to_dict(),
        "smoke": False,
        "output_dir": str(stage.resolve()),
        "checkpoint_dir": str(ckpt_dir.resolve()),
        "fresh": fresh,
        "keep_checkpoint": True,
    }
    log(f"run  {cfg.variant} seed {cfg.seed} -> {nb_path}")
    t0 = time.perf_counter()
    if kernel is not None:
        params["launched_at"] = time.time()  # a reused kernel inherits no new environment
    try:
        _execute(pm, notebook, staged_nb, params, kernel_name, stream, kernel)
        rec = read_record(staged_rec)
        if rec["status"] != "ok":
            raise RuntimeError(f"the notebook finished but its record says {rec['status']}")
    except KeyboardInterrupt as err:  # a record already complete is a result: keep it
        err.kept = _keep_recorded(cfg, out, rec_path, nb_path, staged_rec, staged_nb, claim, keep, t0, log)
        raise
    except Exception as err:  # the run failed: keep its error, never over an ok record, go on
        if kernel is not None:
            kernel.drop()  # whatever state the failure left: the next run gets a fresh kernel
        return _record_failure(cfg, out, rec_path, nb_path, staged_rec, staged_nb, claim, err, t0, log)
    if kernel is not None and (rec.get("allocated_after_mb") or 0) > LEFT_LIMIT_MB:
        log(f"{rec_path.name} left {rec['allocated_after_mb']:.0f} MiB allocated: the next run gets a fresh kernel")
        kernel.drop()
    _note_sharing(rec, claim)
    with _stop_on_write_error(f"stopped before {rec_path.name} was recorded (its checkpoint is kept)"):
        _move_into_place(rec, staged_rec, staged_nb, rec_path, nb_path)
    if not keep:
        (out / "checkpoints" / rec_path.with_suffix(".ckpt").name).unlink(missing_ok=True)
    return _ok_entry(rec, rec_path, nb_path, t0)


def _ok_entry(rec, rec_path, nb_path, t0) -> dict:
    return {
        "record": str(rec_path),
        "notebook": str(nb_path),
        "status": "ok",
        "resumed_from_step": rec.get("resumed_from_step", 0),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def _move_into_place(rec, staged_rec, staged_nb, rec_path, nb_path) -> None:
    """The notebook first (when there is one): a record in place means a whole run."""
    write_record(rec, staged_rec)
    if staged_nb.exists():
        os.replace(staged_nb, nb_path)
    os.replace(staged_rec, rec_path)
    nb_path.with_suffix(".failed.ipynb").unlink(missing_ok=True)


def _keep_recorded(cfg, out, rec_path, nb_path, staged_rec, staged_nb, claim, keep, t0, log) -> dict | None:
    """A run stopped after its notebook wrote an ok record: the record (and the notebook as far as it got)
    moved into place, its summary entry returned; None when there is no whole, ok record to keep."""
    try:
        rec = read_record(staged_rec) if staged_rec.exists() else None
    except (ValueError, OSError):
        rec = None
    if rec is None or rec["status"] != "ok":
        return None
    _note_sharing(rec, claim)
    try:
        _move_into_place(rec, staged_rec, staged_nb, rec_path, nb_path)
    except OSError as err:
        log(f"{cfg.variant} seed {cfg.seed} was recorded, but {rec_path} could not be written ({err.strerror})")
        return None
    if not keep:
        (out / "checkpoints" / rec_path.with_suffix(".ckpt").name).unlink(missing_ok=True)
    log(f"kept {rec_path.name}: its record was complete when the sweep was interrupted")
    return _ok_entry(rec, rec_path, nb_path, t0)


def _record_failure(cfg, out, rec_path, nb_path, staged_rec, staged_nb, claim, err, t0, log) -> dict:
    """A failed run recorded as failed (never over an ok record); its notebook kept as .failed.ipynb."""
    fatal = _write_error(err)
    if fatal is not None:
        raise SweepStopped(
            f"cannot write under {out}: {fatal.strerror}; stopped before "
            f"{cfg.variant} seed {cfg.seed} was recorded (earlier results are intact)"
        ) from None
    rec = _failed_record(cfg, staged_rec, err)
    _note_sharing(rec, claim)
    failed_nb = nb_path.with_suffix(".failed.ipynb")
    with _stop_on_write_error(f"stopped after {cfg.variant} seed {cfg.seed} failed"):
        what = save_result(rec, rec_path)
        if staged_nb.exists():
            os.replace(staged_nb, failed_nb)
    where = (
        f"recorded as failed in {rec_path}"
        if what == "written"
        else f"the earlier ok record {rec_path} is kept, this failure added to its history"
    )
    nb = f"; the notebook as far as it ran: {failed_nb}" if failed_nb.exists() else ""
    log(f"FAILED {cfg.variant} seed {cfg.seed}: {_last_line(err)} ({where}{nb}; the sweep goes on)")
    return {
        "record": str(rec_path),
        "notebook": str(failed_nb),
        "status": "failed",
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def _execute(pm, notebook, staged_nb, params, kernel_name, stream, kernel=None):
    """papermill's execute_notebook in a worker thread; a KeyboardInterrupt here (SIGINT, or SIGTERM through
    _signals_interrupt) kills the run's kernel, waits for the thread and propagates, recording nothing.
    With ``kernel`` (a _Kernel) the run executes in its kernel, started by the first run that needs it.

    In the main thread nbclient would take SIGINT and SIGTERM for itself, shut the kernel down and report a
    failed cell, and leave SIGTERM at its default (a silent exit) afterwards.
    """
    import threading

    from jupyter_client import AsyncKernelManager

    kernels, result = [], {}

    class TrackedKernelManager(AsyncKernelManager):  # remembers the kernel, to stop it on an interrupt
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            kernels.append(self)

    manager = {"kernel_manager_class": TrackedKernelManager}
    if kernel is not None:
        manager = {"km": kernel.manager()}
        kernels.append(manager["km"])

    def target():
        os.environ[LAUNCH_ENV] = repr(time.time())  # the kernel inherits it: its record's "start" counts from here
        try:
            pm.execute_notebook(
                str(notebook),
                str(staged_nb),
                parameters=params,
                kernel_name=kernel_name or (kernel.name if kernel is not None else None),
                progress_bar=False,
                log_output=stream,  # the kernel runs in this cwd
                **manager,
            )
        except BaseException as err:  # handed to the main thread
            result["error"] = err
        finally:
            os.environ.pop(LAUNCH_ENV, None)

    worker = threading.Thread(target=target, name="papermill", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        _kill_kernels(kernels)
        worker.join(30)
        raise
    if "error" in result:
        raise result["error"]


LEFT_LIMIT_MB = 16.0
"""A run that leaves more GPU memory allocated than this (MiB, after collection and with cuBLAS's
workspaces let go: run.allocated_after) ends a reused kernel: a model's weights would."""


class _Kernel:
    """One Jupyter kernel that runs a sweep's runs one after another (``sweep(reuse_kernel=True)``)."""

    def __init__(self, notebook, kernel_name=None):
        import nbformat

        nb = nbformat.read(notebook, as_version=4)
        if "launched_at" not in "".join(c.source for c in _parameters_cells(nb)):
            raise ValueError(
                f"--reuse-kernel needs a parameter launched_at in {notebook}'s parameters cell (each run's "
                "launch: a reused kernel inherits no environment); use chapters/07_experiment.ipynb"
            )
        self.name = kernel_name or nb.metadata.get("kernelspec", {}).get("name")
        self.km = None

    def manager(self):
        """The kernel's manager, a new one after ``drop`` (nbclient starts its kernel on first use)."""
        from jupyter_client import AsyncKernelManager

        if self.km is None:
            self.km = AsyncKernelManager(kernel_name=self.name or "python3")
        return self.km

    def drop(self):
        """End the kernel; the next run starts a fresh one."""
        if self.km is not None:
            _kill_kernels([self.km])
            self.km = None


def _parameters_cells(nb) -> list:
    """The notebook's cells tagged 'parameters' (where papermill injects a run's parameters)."""
    return [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]


def _kill_kernels(kernels):
    """Kill each kernel's process group (kernels run in their own session); its checkpoint stays for a resume."""
    import signal

    for km in kernels:
        proc = getattr(getattr(km, "provisioner", None), "process", None)
        if proc is None or proc.poll() is not None:
            continue
        try:
            group = os.getpgid(proc.pid)
            if group == os.getpgrp():  # not in a session of its own: the kernel alone, never this sweep
                raise PermissionError
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


def _failed_record(cfg, staged_rec, err) -> dict:
    """The notebook's own record if it wrote one (marked failed if a later cell failed), else a new one."""
    rec = None
    if staged_rec.exists():
        try:
            rec = read_record(staged_rec)
        except (ValueError, OSError):
            rec = None
    if rec is None:
        rec = new_record(cfg)
    if rec["status"] == "ok":  # the record was written, then a later cell failed
        rec["error"] = f"a notebook cell after the record failed: {type(err).__name__}: {_last_line(err)}"
    else:
        rec["error"] = rec.get("error") or f"{type(err).__name__}: {err}"[-2000:]
    rec["status"] = "failed"
    return rec


def _note_sharing(rec: dict, claim: Claim):
    """Mark a run that shared its device with another claimed run: its times are not solo times.
    Every record also says which device slot (CUDA_VISIBLE_DEVICES, 'gpu' or 'cpu') it ran on."""
    rec["device_slot"] = claim.slot
    claim.concurrent = max(claim.concurrent, 1 + len(claim.sharing()))
    if claim.concurrent > 1:
        for notes in (rec.setdefault("notes", {}), rec.get("config", {}).setdefault("notes", {})):
            notes["concurrent_runs"] = max(claim.concurrent, notes.get("concurrent_runs", 1) or 1)


def gpu_ids(requested: str) -> list[str]:
    """The GPUs ``--gpus N|all`` names: the first N visible ones (ValueError when there are fewer)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip():
        ids = [x.strip() for x in visible.split(",") if x.strip()]
    else:
        import torch

        ids = [str(i) for i in range(torch.cuda.device_count())]
    if not ids:
        raise ValueError("--gpus needs CUDA GPUs and none is visible here; drop --gpus to run on this machine")
    if requested == "all":
        return ids
    if not requested.isdigit() or not 1 <= int(requested) <= len(ids):
        raise ValueError(f"--gpus {requested}: valid: all, or 1 to {len(ids)} (GPUs visible here: {', '.join(ids)})")
    return ids[: int(requested)]


def sweep_on_gpus(worker_argv: list[str], gpus: list[str], log=print) -> list[dict]:
    """One sweep process per GPU, each pinned to its GPU (CUDA_VISIBLE_DEVICES), all on one plan.

    The workers share the output folder and split the runs through claims: each run executes
    once, on one GPU, and no two runs share a GPU, so every time is a solo time. Their progress is
    passed through prefixed with the GPU; returns the runs each worker executed or skipped.
    """
    import json
    import subprocess
    import threading

    procs = []
    for gpu in gpus:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "attnpaper", "sweep", *worker_argv],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )

    def relay(gpu, stream):
        for line in stream:
            log(f"[gpu {gpu}] {line.rstrip()}")

    relays = [threading.Thread(target=relay, args=(g, p.stderr), daemon=True) for g, p in zip(gpus, procs)]
    for t in relays:
        t.start()
    interrupted, outputs = None, []
    with _signals_interrupt():
        try:
            for p in procs:
                outputs.append(p.stdout.read())  # stderr belongs to the relays: not communicate()
        except KeyboardInterrupt as err:  # each worker stops its run, keeps its records, reports them
            interrupted = str(err) or "SIGINT"
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()
            outputs += [p.stdout.read() for p in procs[len(outputs) :]]
    for p, t in zip(procs, relays):
        p.wait()
        t.join()
    merged = {}
    for gpu, proc, out in zip(gpus, procs, outputs):
        if interrupted:
            with contextlib.suppress(ValueError):
                for entry in json.loads(out or "[]"):
                    merged[entry["record"]] = entry | {"gpu": gpu}
            continue
        if proc.returncode not in (0, 1):
            raise SweepStopped(f"the sweep on GPU {gpu} stopped (exit {proc.returncode}); rerun to resume")
        for entry in json.loads(out or "[]"):
            entry["gpu"] = gpu
            if entry["status"] in ("ok", "failed") or entry["record"] not in merged:
                merged[entry["record"]] = entry  # the worker that ran it, not the ones that skipped it
    if interrupted:
        kept = sum(r["status"] == "ok" for r in merged.values())
        raise SweepInterrupted(
            f"interrupted ({interrupted}): {kept} run(s) recorded in this sweep and every earlier "
            "record are kept; run the same command again to resume",
            list(merged.values()),
        )
    return list(merged.values())
