"""Fingerprints of what a run read: the data files and the model's files, by content.

A record keeps ``data_fingerprint`` and ``model_fingerprint``, and the sweep reruns a recorded run
whose fingerprints no longer match (the parquet files replaced in the same folder, new weights in
the same model folder). Size and modification time alone would miss a copy that keeps both, so each
file is hashed (SHA-256); the hash is cached by (path, size, mtime_ns, and ctime_ns and inode, which
a copy that restores the modification time still changes), in memory and in
``$XDG_CACHE_HOME/attnpaper/file-hashes.json``, so a rerun reads no file twice. None means that the
fingerprint cannot be computed here (the hub's IMDb, files that are missing): such a run matches any.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..files import write_atomic
from ..variants import OFFLINE_MODEL, RANDOM_ALIASES

DATA_FILES = ("train.parquet", "test.parquet")
MODEL_FILES = (
    "*.safetensors",
    "*.bin",
    "*.pt",
    "*.pth",
    "*.h5",
    "*.msgpack",
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)
"""A model folder's files that change what a run computes: weights, config and tokenizer (not READMEs)."""
HUB_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json", "vocab.txt")
_memory: dict[str, str] = {}


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "attnpaper" / "file-hashes.json"


def _load_cache() -> dict:
    try:
        data = json.loads(cache_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def file_hash(path) -> str:
    """SHA-256 of a file's bytes, cached by (resolved path, size, mtime_ns, ctime_ns, inode)."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"
    if key in _memory:
        return _memory[key]
    cache = _load_cache()
    if key not in cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        cache = {k: v for k, v in cache.items() if not k.startswith(f"{path}|")}  # older versions of this file
        cache[key] = h.hexdigest()
        try:
            write_atomic(cache_path(), json.dumps(cache, indent=0, sort_keys=True))
        except OSError:  # a read-only home: hash again next time
            pass
    _memory[key] = cache[key]
    return cache[key]


def files_fingerprint(files) -> str:
    """One short hash over (name, content hash) of each file, in name order."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda p: Path(p).name):
        h.update(f"{Path(f).name}={file_hash(f)}\n".encode())
    return "sha256:" + h.hexdigest()[:16]


def data_fingerprint(source) -> str | None:
    """'synthetic'; the content of a folder's train/test.parquet or of a token cache .npz; None for the hub
    or when the files are missing (the run's own checks say why)."""
    if source is None:
        return None
    source = str(source)
    if source == "synthetic":
        return "synthetic"
    if source == "hub":
        return None
    path = Path(source).expanduser()
    files = [path] if path.is_file() else [path / name for name in DATA_FILES]
    if not all(f.is_file() for f in files):
        return None
    return files_fingerprint(files)


def model_fingerprint(model) -> str | None:
    """A random-init alias by its name; a local folder (the packaged offline model too) by the content of
    its weight, config and tokenizer files; a hub name by its name and, when it is in the local hub cache,
    by those files too. None when nothing can be read."""
    if model is None:
        return None
    model = str(model)
    if model in RANDOM_ALIASES:
        return f"alias:{model}"
    if model == OFFLINE_MODEL:
        try:
            from ..model.build import offline_model_dir

            return model_fingerprint(str(offline_model_dir()))
        except ImportError:
            return None
    path = Path(model).expanduser()
    if path.is_dir():
        files = sorted({f for pattern in MODEL_FILES for f in path.glob(pattern) if f.is_file()})
        return files_fingerprint(files) if files else None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return f"hub:{model}"
    found = []
    for name in HUB_FILES:
        try:
            hit = try_to_load_from_cache(model, name)
        except Exception:  # an invalid repo id: the run's checks name it
            return f"hub:{model}"
        if isinstance(hit, str) and Path(hit).is_file():
            found.append(Path(hit))
    return f"hub:{model}" + (f"@{files_fingerprint(found)}" if found else "")


def fingerprints(cfg) -> dict:
    """{'data_fingerprint': ..., 'model_fingerprint': ...} of a RunConfig, as a record keeps them; the model's
    covers the tokenizer folder that $ATTNPAPER_TOKENIZER gives a random-init model (tokenizer_override)."""
    from ..training.config import tokenizer_override

    model = model_fingerprint(cfg.model)
    tokenizer = tokenizer_override(cfg.model)
    if tokenizer and model:
        model += f"+tokenizer:{model_fingerprint(tokenizer)}"
    return {"data_fingerprint": data_fingerprint(cfg.data), "model_fingerprint": model}


def stale(record: dict, current: dict) -> str | None:
    """Which of the record's fingerprints differs from ``current`` (a phrase for the log), or None.

    A fingerprint that cannot be computed now (None) matches anything; a record written before
    fingerprints existed (no field) matches only then, so it is rerun once wherever they can be.
    """
    changed = [key.split("_")[0] for key, now in current.items() if now is not None and record.get(key) != now]
    if not changed:
        return None
    if all(key not in record for key in current):
        return "it was recorded without data and model fingerprints"
    return f"its {' and '.join(changed)} changed since it was recorded"
