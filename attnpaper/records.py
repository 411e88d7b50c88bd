"""Results records: one JSON file per (configuration, variant, seed), written atomically."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import traceback
from pathlib import Path

from .config import RunConfig

REQUIRED = ("variant", "seed", "model", "max_length", "epochs", "batch_size", "lr", "precision",
            "train_samples", "test_samples", "accuracy", "train_time_s", "peak_memory_mb", "tokens_per_s",
            "device", "kernels", "versions", "git_sha", "status", "error", "config_hash")
GIT_SHA_ENV = "ATTNPAPER_GIT_SHA"
TMP_PREFIX = ".tmp-"


def git_sha() -> str:
    """$ATTNPAPER_GIT_SHA (set by GPU bundles, which travel without .git), else `git rev-parse HEAD`."""
    if os.environ.get(GIT_SHA_ENV):
        return os.environ[GIT_SHA_ENV]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def record_name(cfg: RunConfig) -> str:
    return f"{cfg.variant}_seed{cfg.seed}_{cfg.config_hash()}.json"


def temp_path(path) -> Path:
    """A hidden temporary name beside ``path`` that says which process wrote it (see clean_temp)."""
    path = Path(path)
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}@{socket.gethostname()}@{path.name}")


@contextlib.contextmanager
def atomic_file(path, mode="w"):
    """Open a temporary file beside ``path``; on leaving, fsync and rename it to ``path``.

    A reader sees all or nothing. On any error (a full disk, no permission) the temporary file
    is removed and the error re-raised; whatever ``path`` held before is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path, text: str) -> Path:
    """Write text to ``path`` atomically (see atomic_file)."""
    with atomic_file(path) as f:
        f.write(text)
    return Path(path)


def write_record(record: dict, path) -> Path:
    """Write a record as JSON, atomically (see write_atomic)."""
    return write_atomic(path, json.dumps(record, indent=1, sort_keys=True, default=str))


def is_record_path(path) -> bool:
    """Records are ``*.json`` files; hidden files (temporary writes) are not."""
    path = Path(path)
    return path.suffix == ".json" and not path.name.startswith(".")


def read_record(path) -> dict:
    """A record, or ValueError naming the file when it is not a whole record."""
    try:
        with open(path) as f:
            rec = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"record {path} is not valid JSON ({err}); it may be truncated") from None
    if not isinstance(rec, dict):
        raise ValueError(f"record {path} is not a JSON object")
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise ValueError(f"record {path} lacks field(s) {', '.join(missing)}")
    return rec


def save_result(rec: dict, path) -> str:
    """Write a run's record without ever losing a result; returns what was done.

    An ok record replaces whatever was there. A failed one is written only where no ok record
    exists; otherwise it goes into that record's ``history`` and the ok result stays.
    """
    path = Path(path)
    if rec["status"] != "ok" and path.exists():
        try:
            old = read_record(path)
        except (ValueError, OSError):
            old = None
        if old is not None and old["status"] == "ok":
            old.setdefault("history", []).append(
                {k: rec.get(k) for k in ("status", "error", "started", "git_sha")} | {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            write_record(old, path)
            return "kept the previous ok record; the failure is in its history"
    write_record(rec, path)
    return "written"


def clean_temp(folder, max_age_s=24 * 3600) -> list[Path]:
    """Remove temporary files left by dead writers: this host's dead processes, or older than max_age_s."""
    removed = []
    host = socket.gethostname()
    for p in Path(folder).glob(TMP_PREFIX + "*"):
        pid, name_host, _ = (p.name[len(TMP_PREFIX):].split("@", 2) + ["", ""])[:3]
        dead = name_host == host and pid.isdigit() and not pid_alive(int(pid))
        try:
            if dead or time.time() - p.stat().st_mtime > max_age_s:
                p.unlink()
                removed.append(p)
        except OSError:
            pass
    return removed


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def default_output_dir(smoke=False) -> Path:
    """Where a notebook run without ``output_dir`` leaves its record: results/{local,smoke}/records of
    this checkout (of the working directory when the package is installed elsewhere)."""
    root = Path(__file__).resolve().parent.parent
    root = root if (root / "chapters").is_dir() else Path.cwd()
    return root / "results" / ("smoke" if smoke else "local") / "records"


def new_record(cfg: RunConfig) -> dict:
    """A record for cfg before any measurement: configuration, hash, device, versions, git sha."""
    from .train import device_info

    versions = device_info()
    rec = {k: None for k in REQUIRED}
    rec.update(cfg.to_dict(), config=cfg.to_dict(), config_hash=cfg.config_hash(), device=versions.pop("device"),
               versions=versions, git_sha=git_sha(), started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               status="running", error=None)
    return rec


def run_and_record(cfg: RunConfig, out_dir, checkpoint_dir=None, fresh=False, keep_checkpoint=False,
                   **train_kwargs) -> dict:
    """Train, measure and write the record; a failure is written as status 'failed' and re-raised.

    The run checkpoints every ``cfg.checkpoint_every`` steps into ``checkpoint_dir`` (default:
    out_dir/checkpoints) and resumes from there when rerun; ``fresh`` ignores a checkpoint. The
    checkpoint is removed once the record is written, unless ``keep_checkpoint``. A failed rerun
    never replaces an ok record (see save_result).
    """
    from .checks import check_plan
    from .checkpoint import Checkpoint
    from .train import train

    from . import ddp

    if cfg.nproc_per_node > 1 and not ddp.launched():  # start the processes; rank 0 writes the record
        check_plan([cfg])
        return ddp.launch(cfg, out_dir, checkpoint_dir, fresh, keep_checkpoint)
    rank = ddp.world()[0]
    rec = new_record(cfg)
    path = Path(out_dir) / record_name(cfg)
    ckpt = None
    if cfg.checkpoint_every:
        out_dir = Path(out_dir)
        default = out_dir.parent if out_dir.name == "records" else out_dir
        ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else default / "checkpoints"
        ckpt = Checkpoint(ckpt_dir / path.with_suffix(".ckpt").name, cfg.to_dict(), cfg.checkpoint_every,
                          fresh=fresh, keep=keep_checkpoint)
    try:
        check_plan([cfg], train_kwargs.get("device"))
        rec.update(train(cfg, checkpoint=ckpt, **train_kwargs))
        rec["status"] = "ok"
    except Exception as err:
        rec.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        if rank == 0:
            save_result(rec, path)
        raise
    if rank == 0:  # one record per run: data-parallel ranks 1.. trained the same model
        save_result(rec, path)
        if ckpt:
            ckpt.finish()
    return rec
