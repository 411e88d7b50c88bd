"""Files that a reader sees whole or not at all, and the liveness of the processes that write them.

Plain Python, no torch: records, checkpoints and claims all write through ``atomic_file``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

TMP_PREFIX = ".tmp-"


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


def clean_temp(folder, max_age_s=24 * 3600) -> list[Path]:
    """Remove temporary files left by dead writers: this host's dead processes, or older than max_age_s."""
    removed = []
    host = socket.gethostname()
    for p in Path(folder).glob(TMP_PREFIX + "*"):
        pid, name_host, _ = (p.name[len(TMP_PREFIX) :].split("@", 2) + ["", ""])[:3]
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


def checkout_root() -> Path:
    """The folder holding chapters/ and results/: this checkout, or the working directory when the
    package is installed elsewhere (notebooks and the sweep find their files from here)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "chapters").is_dir() else Path.cwd()


@contextlib.contextmanager
def signals_interrupt():
    """SIGTERM raises KeyboardInterrupt like SIGINT does (in the main thread); the handlers are restored after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):  # once: a second signal must not cut the clean-up short
        for sig in old:
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def interrupted(why: str, what: str) -> int:
    """Say, in one line on stderr, what a command interrupted by ``why`` (SIGINT or SIGTERM) kept; return
    the shell's exit status for that signal (130 or 143)."""
    import sys

    print(f"interrupted ({why}): {what}", file=sys.stderr, flush=True)
    return 143 if why == "SIGTERM" else 130
