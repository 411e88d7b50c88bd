"""Resumable runs: the whole state of a training run, saved every N steps and at each epoch end.

A checkpoint holds what the next step depends on: weights and every buffer (the FAVOR+
projections included), AdamW's moments, the scheduler, the gradient scaler, the random states
(torch, CUDA, Python, NumPy and each layer's feature generator), and where the run is in its fixed
data order. Restored, a CPU run continues bitwise as if it had never stopped. Files are written to
a temporary name and renamed, so a kill leaves the previous checkpoint whole.

Writing overlaps training: ``store`` copies the state to host memory (the one pause the run takes)
and a background thread serialises, fsyncs and renames it, while the next steps run. A ``store``
while a write is under way does not wait for it: its state is written next, in place of any older one
still waiting (on a fast GPU checkpoints can come a second apart, 1,500 and 1,564 steps at 128 tokens,
and checkpoints cost a run 1.3-1.7 s on an H100 at aa0f586, of which the copies to host memory, 7 of
273 MB for MiniLM with AdamW, would take about 0.3 s at 6 GB/s: an estimate; the rest is taken to be the
wait for the previous write, which the next GPU call measures). Every other method waits for the
writes first, so a checkpoint is never read, replaced or removed half-written; a write that failed raises
at the next call. The thread is not a daemon: a process that is interrupted still finishes the writes it
was given before it exits.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import threading
from pathlib import Path

import numpy as np
import torch

from ..files import atomic_file

FORMAT = 1
PROGRESS = ("step", "real_tokens", "slot_tokens", "losses", "train_time_s")
"""Where a run is: steps done, tokens seen (real and with padding), losses so far, training seconds so far."""


def fresh_progress() -> dict:
    return {"step": 0, "real_tokens": 0, "slot_tokens": 0, "losses": [], "train_time_s": 0.0}


def plan_digest(plan) -> str:
    """A short hash of the data order (every step's row indices): a resumed run must see the same."""
    return hashlib.sha256(repr(plan).encode()).hexdigest()[:16]


def _same_config(a: dict, b: dict) -> bool:
    skip = ("notes", "checkpoint_every")
    return {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}


class Checkpoint:
    """One run's checkpoint file: ``save`` when ``due``, ``load`` at the start, ``remove`` when done."""

    def __init__(self, path, config: dict, every: int, fresh=False, keep=False):
        self.path, self.config, self.every, self.keep = Path(path), config, every, keep
        self._writer, self._error, self._next, self._busy = None, None, None, False
        self._lock = threading.Lock()  # guards _next and _busy, shared with the writer thread
        if fresh:
            self.remove()

    def wait(self) -> None:
        """Block until the writes ``store`` gave have finished; raise a failed one's error."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        err, self._error = self._error, None
        if err is not None:
            raise err

    def _write(self, state):
        """The writer thread: ``state``, then whatever ``store`` left waiting meanwhile, until none is."""
        while True:
            try:
                self.save(state)
            except BaseException as err:  # handed to the main thread by wait()
                self._error = err
            with self._lock:
                state, self._next = self._next, None
                if state is None:
                    self._busy = False  # under the lock: a store after this starts a new writer
                    return

    def due(self, step: int, steps_per_epoch: int) -> bool:
        """After ``step`` steps: every ``every`` steps and at each epoch's end."""
        return self.every > 0 and step > 0 and (step % self.every == 0 or step % steps_per_epoch == 0)

    def save(self, state: dict) -> None:
        """Write ``state`` atomically (temporary file in the same folder, fsync, rename)."""
        with atomic_file(self.path, "wb") as f:
            torch.save({"format": FORMAT, "config": self.config, **state}, f)

    def load(self, plan: str) -> dict | None:
        """The saved state, or None to start at step 0.

        A checkpoint that cannot be read, or that belongs to another configuration or data order,
        is reported in one line and set aside (``*.corrupt``); the run then starts over.
        """
        self.wait()
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
            if not isinstance(state, dict) or state.get("format") != FORMAT:
                raise ValueError("not an attnpaper checkpoint")
            if not _same_config(state["config"], self.config) or state["plan"] != plan:
                raise ValueError("it belongs to another configuration or data order")
        except Exception as err:  # torch raises many types for a damaged file
            aside = self.path.with_suffix(".corrupt")
            try:
                os.replace(self.path, aside)
            except FileNotFoundError:  # another rank of a data-parallel run moved it first
                pass
            print(
                f"checkpoint {self.path} cannot be used ({type(err).__name__}: {str(err)[:100]}); "
                f"moved to {aside.name}, starting from step 0",
                file=sys.stderr,
                flush=True,
            )
            return None
        return state

    def restore(self, plan: str, model, optimizer, scheduler, scaler, generators) -> dict:
        """Put a saved run back into these objects; returns the progress to continue from (step 0 if none)."""
        saved = self.load(plan)
        if not saved:
            return fresh_progress()
        load_model_state(model, saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        set_random_states(saved["random"], generators)
        return {k: saved[k] for k in PROGRESS} | {"losses": list(saved["losses"])}

    def store(self, plan: str, progress: dict, model, optimizer, scheduler, scaler, generators) -> None:
        """Save the whole state after ``progress["step"]`` steps, written in the background (module docstring)."""
        state = _on_host(
            {
                "plan": plan,
                "model": model_state(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "random": random_states(generators),
                **progress,
                "losses": [float(x) for x in progress["losses"]],
            }
        )
        with self._lock:  # one write at a time, in order; a write under way takes this state next
            if self._busy and self._error is None:
                self._next = state  # an older state still waiting is never written: this one is newer
                return
        self.wait()  # the last writer has ended, or is ending (raises its error, if a write failed)
        self._busy = True
        self._writer = threading.Thread(target=self._write, args=(state,), name="attnpaper-checkpoint")
        self._writer.start()

    def remove(self) -> None:
        self.wait()
        self.path.unlink(missing_ok=True)

    def finish(self) -> None:
        """The run is recorded: remove its checkpoint unless asked to keep it (then once it is written)."""
        self.wait()
        if not self.keep:
            self.remove()


def _on_host(x):
    """A copy of a state that training can no longer change: tensors copied to the CPU, containers rebuilt."""
    if torch.is_tensor(x):
        return x.detach().to("cpu", copy=True)
    if isinstance(x, dict):
        return {k: _on_host(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_on_host(v) for v in x)
    return x


def random_states(generators) -> dict:
    """Every random stream a step draws from."""
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "generators": [g.get_state() for g in generators],
    }


def set_random_states(states: dict, generators) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    for g, s in zip(generators, states["generators"]):
        g.set_state(s)


def model_state(model) -> dict:
    """Parameters and every buffer, persistent or not (the FAVOR+ projections are not persistent)."""
    return {"params": model.state_dict(), "buffers": {n: b.detach().cpu().clone() for n, b in model.named_buffers()}}


def load_model_state(model, state: dict) -> None:
    model.load_state_dict(state["params"])
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for name, value in state["buffers"].items():
            buffers[name].copy_(value)
