"""Results records: one JSON file per (configuration, variant, seed), written atomically."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

from ..files import checkout_root, write_atomic
from ..training.config import RunConfig

REQUIRED = (
    "variant",
    "seed",
    "model",
    "max_length",
    "epochs",
    "batch_size",
    "lr",
    "precision",
    "train_samples",
    "test_samples",
    "accuracy",
    "train_time_s",
    "peak_memory_mb",
    "tokens_per_s",
    "device",
    "kernels",
    "versions",
    "git_sha",
    "status",
    "error",
    "config_hash",
)
GIT_SHA_ENV = "ATTNPAPER_GIT_SHA"


def git_sha() -> str:
    """$ATTNPAPER_GIT_SHA (set by GPU bundles, which travel without .git), else the HEAD of this checkout
    (checkout_sha), else "unknown": never the commit of another repository that merely encloses a copy."""
    return os.environ.get(GIT_SHA_ENV) or checkout_sha() or "unknown"


def checkout_sha(root=None) -> str | None:
    """HEAD of the git repository whose top level is ``root`` (default: the folder holding this package,
    if its pyproject.toml names attnpaper), or None: no git, no repository, or one whose top is elsewhere."""
    root = Path(root or Path(__file__).resolve().parents[2]).resolve()
    project = root / "pyproject.toml"
    if not project.is_file() or not re.search(r'^name\s*=\s*"attnpaper"', project.read_text(), re.MULTILINE):
        return None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"], capture_output=True, text=True, timeout=10, cwd=root
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split("\n")
    if out.returncode or len(lines) < 2 or Path(lines[0]).resolve() != root:
        return None
    return lines[1].strip() or None


def record_name(cfg: RunConfig) -> str:
    return f"{cfg.variant}_seed{cfg.seed}_{cfg.config_hash()}.json"


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
        with open(path, encoding="utf-8") as f:
            rec = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"record {path} is not valid JSON ({err}); it may be truncated") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"record {path} is not UTF-8 text (byte {err.start}: {err.reason})") from None
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
                {k: rec.get(k) for k in ("status", "error", "started", "git_sha")}
                | {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            )
            write_record(old, path)
            return "kept the previous ok record; the failure is in its history"
    write_record(rec, path)
    return "written"


def default_output_dir(smoke=False) -> Path:
    """Where a notebook run without ``output_dir`` leaves its record: results/{local,smoke}/records of
    this checkout (of the working directory when the package is installed elsewhere)."""
    return checkout_root() / "results" / ("smoke" if smoke else "local") / "records"


def new_record(cfg: RunConfig) -> dict:
    """A record for cfg before any measurement: configuration, hash, device, versions, git sha, and the
    content fingerprints of its data and model (``data_fingerprint``, ``model_fingerprint``: see
    attnpaper.experiment.fingerprint; not in REQUIRED, so records written before them still read)."""
    from ..training.measure import device_info  # torch: imported only when a run starts
    from .fingerprint import fingerprints

    versions = device_info()
    rec = {k: None for k in REQUIRED}
    rec.update(
        cfg.hashed_dict(),
        config=cfg.hashed_dict(),  # with the tokenizer where $ATTNPAPER_TOKENIZER set it (RunConfig.hashed_dict)
        config_hash=cfg.config_hash(),
        device=versions.pop("device"),
        versions=versions,
        git_sha=git_sha(),
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        status="running",
        error=None,
        **fingerprints(cfg),
    )
    return rec
