"""One run, start to record: checks, training, the record written.

A data-parallel run (``nproc_per_node`` > 1) is started here with torchrun, which runs this module
once per process (``main``); see training/ddp.py for what each process does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

from ..training import ddp
from ..training.checkpoint import Checkpoint
from ..training.clock import LAUNCH_ENV, Clock, launched_at
from ..training.config import RunConfig
from ..training.loop import train
from .checks import check_plan
from .records import new_record, read_record, record_name, save_result

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


_RUNS_HERE = [0]  # runs this process has started: a sweep that reuses its kernel runs several in one


def run_and_record(
    cfg: RunConfig, out_dir, checkpoint_dir=None, fresh=False, keep_checkpoint=False, launched_at=None, **train_kwargs
) -> dict:
    """Train, measure and write the record; a failure is written as status 'failed' and re-raised.

    The run checkpoints every ``cfg.checkpoint_every`` steps into ``checkpoint_dir`` (default:
    out_dir/checkpoints) and resumes from there when rerun; ``fresh`` ignores a checkpoint. The
    checkpoint is removed once the record is written, unless ``keep_checkpoint``. A failed rerun
    never replaces an ok record (see save_result). The record holds the wall time from the run's launch
    to just before it is written (``end_to_end_s``) and its parts (``time_parts_s``; see training/clock.py),
    counted from ``launched_at`` (time.time(): the sweep's launch of this run) or else the process's start,
    and how many runs this process ran before it (``runs_before_in_process``: 0 in a fresh kernel).
    """
    clock = Clock(launched=launched_at)  # first: what came before (kernel start, imports) is the part "start"
    runs_before, _RUNS_HERE[0] = _RUNS_HERE[0], _RUNS_HERE[0] + 1

    if cfg.nproc_per_node > 1 and not launched():  # start the processes; rank 0 writes the record
        check_plan([cfg])
        return launch(cfg, out_dir, checkpoint_dir, fresh, keep_checkpoint)
    rank = ddp.world()[0]
    rec = new_record(cfg) | {"runs_before_in_process": runs_before}
    path = Path(out_dir) / record_name(cfg)
    ckpt = None
    if cfg.checkpoint_every:
        out_dir = Path(out_dir)
        default = out_dir.parent if out_dir.name == "records" else out_dir
        ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else default / "checkpoints"
        ckpt = Checkpoint(
            ckpt_dir / path.with_suffix(".ckpt").name,
            cfg.hashed_dict(),  # a resume under another $ATTNPAPER_TOKENIZER is refused
            cfg.checkpoint_every,
            fresh=fresh,
            keep=keep_checkpoint,
        )
    try:
        check_plan([cfg], train_kwargs.get("device"))
        rec.update(train(cfg, checkpoint=ckpt, clock=clock, **train_kwargs))
        rec["status"] = "ok"
    except Exception as err:
        rec.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        rec.update(clock.stop())
        if rank == 0:
            save_result(rec, path)
        raise
    rec["allocated_after_mb"] = allocated_after()
    if rec["allocated_after_mb"]:  # what holds it, where anything does: the tensors that gc can reach
        rec["live_tensors_after_mb"] = live_cuda_tensors_mb()
    rec.update(clock.stop())
    if rank == 0:  # one record per run: data-parallel ranks 1.. trained the same model
        save_result(rec, path)
        if ckpt:
            ckpt.finish()
    return rec


def allocated_after() -> float | None:
    """MiB the CUDA allocator still holds once the run's objects are collected (None on a CPU): what the
    next run in this process would start with. A sweep that reuses its kernel starts a fresh one above
    sweep.LEFT_LIMIT_MB, so that no run's peak holds an earlier run's tensors.

    cuBLAS's workspaces are let go first, as PyTorch's own leak check does: cuBLAS keeps them for good,
    and a fresh process would allocate them again too, inside its peak. On 3c0b55b, which did not let them
    go, every run on an H100 left 98 MiB, whatever its variant; with them let go, 0.0 MiB (aa0f586, eight
    runs: results/issue38/h100-aa0f586). Where anything is left, ``live_tensors_after_mb`` says how much of
    it Python still reaches."""
    import gc

    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    gc.collect()
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None:
        clear()
    return torch.cuda.memory_allocated() / 2**20


def live_cuda_tensors_mb() -> float:
    """MiB of the CUDA tensors that Python objects still reach (gc's objects; storages counted once)."""
    import gc

    import torch

    seen, total = set(), 0
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor) and obj.is_cuda:
                storage = obj.untyped_storage()
                if storage.data_ptr() not in seen:
                    seen.add(storage.data_ptr())
                    total += storage.nbytes()
        except Exception:  # objects that are half torn down, or that forbid the check
            continue
    return total / 2**20


def launched() -> bool:
    """True inside a process that torchrun started."""
    return all(k in os.environ for k in ENV)


def launch(cfg, out_dir, checkpoint_dir=None, fresh=False, keep_checkpoint=False, timeout=None) -> dict:
    """Run ``cfg`` on cfg.nproc_per_node processes with torchrun; returns the record rank 0 wrote."""
    out_dir = Path(out_dir)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={cfg.nproc_per_node}",
        "-m",
        "attnpaper.experiment.run",
        "--config",
        json.dumps(cfg.to_dict()),
        "--out",
        str(out_dir),
    ]
    if checkpoint_dir:
        cmd += ["--checkpoint-dir", str(checkpoint_dir)]
    cmd += ["--fresh"] * bool(fresh) + ["--keep-checkpoint"] * bool(keep_checkpoint)
    env = {**os.environ, LAUNCH_ENV: repr(launched_at())}  # rank 0's "start" part: from this run's launch
    proc = subprocess.run(cmd, timeout=timeout, env=env)
    path = out_dir / record_name(cfg)
    rec = read_record(path) if path.exists() else None
    if proc.returncode != 0 or rec is None or rec["status"] != "ok":
        why = rec["error"] if rec and rec.get("error") else f"torchrun exited with {proc.returncode}"
        raise RuntimeError(f"data-parallel run on {cfg.nproc_per_node} processes failed: {why}")
    return rec


def main(argv=None) -> int:
    """Entry point of each torchrun process: train this rank's share; rank 0 writes the record."""
    import torch.distributed as dist

    ap = argparse.ArgumentParser(prog="torchrun ... -m attnpaper.experiment.run")
    ap.add_argument("--config", required=True, help="the RunConfig as JSON")
    ap.add_argument("--out", required=True)
    ap.add_argument("--checkpoint-dir", default=None)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--keep-checkpoint", action="store_true")
    args = ap.parse_args(argv)
    cfg = RunConfig.from_dict(json.loads(args.config))
    try:
        run_and_record(
            cfg,
            args.out,
            checkpoint_dir=args.checkpoint_dir,
            fresh=args.fresh,
            keep_checkpoint=args.keep_checkpoint,
            progress=ddp.world()[0] == 0,
        )
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
