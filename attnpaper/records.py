"""Results records: one JSON file per (configuration, variant, seed), written atomically."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import traceback
from pathlib import Path

from .config import RunConfig

REQUIRED = ("variant", "seed", "model", "max_length", "epochs", "batch_size", "lr", "precision",
            "train_samples", "test_samples", "accuracy", "train_time_s", "peak_memory_mb", "tokens_per_s",
            "device", "kernels", "versions", "git_sha", "status", "error", "config_hash")
GIT_SHA_ENV = "ATTNPAPER_GIT_SHA"


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


def write_record(record: dict, path) -> Path:
    """Write JSON via a temporary file and rename, so a reader never sees half a record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True, default=str)
    os.replace(tmp, path)
    return path


def read_record(path) -> dict:
    with open(path) as f:
        rec = json.load(f)
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise ValueError(f"record {path} lacks field(s) {', '.join(missing)}")
    return rec


def new_record(cfg: RunConfig) -> dict:
    """A record for cfg before any measurement: configuration, hash, device, versions, git sha."""
    from .train import device_info

    versions = device_info()
    rec = {k: None for k in REQUIRED}
    rec.update(cfg.to_dict(), config=cfg.to_dict(), config_hash=cfg.config_hash(), device=versions.pop("device"),
               versions=versions, git_sha=git_sha(), started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               status="running", error=None)
    return rec


def run_and_record(cfg: RunConfig, out_dir, **train_kwargs) -> dict:
    """Train, measure and write the record; a failure is written as status 'failed' and re-raised."""
    from .train import train

    rec = new_record(cfg)
    path = Path(out_dir) / record_name(cfg)
    try:
        cfg.validate()
        rec.update(train(cfg, **train_kwargs))
        rec["status"] = "ok"
    except Exception as err:
        rec.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        write_record(rec, path)
        raise
    write_record(rec, path)
    return rec
