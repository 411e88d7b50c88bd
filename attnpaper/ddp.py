"""Data-parallel runs: one process per GPU, launched by torchrun, gradients averaged by PyTorch DDP.

A run with ``nproc_per_node`` > 1 keeps the single-GPU experiment: the same global batch (each of
the N processes takes every N-th row of it), the same learning rate, the same data order and the
same number of steps, so its result matches a one-GPU run within seed noise. Rank 0 measures and
writes the record (its GPU's time and memory); the test split is shared out and the counts summed.
On a CPU the processes talk through gloo (what CI tests); on GPUs through NCCL.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) outside torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def launched() -> bool:
    """True inside a process that torchrun started."""
    return all(k in os.environ for k in ENV)


def setup(device: torch.device) -> torch.device:
    """Join the process group (NCCL on GPUs, gloo on CPUs); the device this rank trains on."""
    import torch.distributed as dist

    _, size, local = world()
    if size == 1 or dist.is_initialized():
        return torch.device(f"cuda:{local}") if device.type == "cuda" and size > 1 else device
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device(f"cuda:{local}")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            device_id=device if device.type == "cuda" else None)
    return device


def shard(rows: list, rank: int, size: int) -> list:
    """This rank's rows of a global batch: every size-th row, starting at rank."""
    return rows[rank::size]


def all_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (identity in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x)
    return x


def launch(cfg, out_dir, checkpoint_dir=None, fresh=False, keep_checkpoint=False, timeout=None) -> dict:
    """Run ``cfg`` on cfg.nproc_per_node processes with torchrun; returns the record rank 0 wrote."""
    from .records import read_record, record_name

    out_dir = Path(out_dir)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.nproc_per_node}",
           "-m", "attnpaper.ddp", "--config", json.dumps(cfg.to_dict()), "--out", str(out_dir)]
    if checkpoint_dir:
        cmd += ["--checkpoint-dir", str(checkpoint_dir)]
    cmd += ["--fresh"] * bool(fresh) + ["--keep-checkpoint"] * bool(keep_checkpoint)
    proc = subprocess.run(cmd, timeout=timeout)
    path = out_dir / record_name(cfg)
    rec = read_record(path) if path.exists() else None
    if proc.returncode != 0 or rec is None or rec["status"] != "ok":
        why = rec["error"] if rec and rec.get("error") else f"torchrun exited with {proc.returncode}"
        raise RuntimeError(f"data-parallel run on {cfg.nproc_per_node} processes failed: {why}")
    return rec


def main(argv=None) -> int:
    """Entry point of each torchrun process: train this rank's share; rank 0 writes the record."""
    import torch.distributed as dist

    from .config import RunConfig
    from .records import run_and_record

    ap = argparse.ArgumentParser(prog="torchrun ... -m attnpaper.ddp")
    ap.add_argument("--config", required=True, help="the RunConfig as JSON")
    ap.add_argument("--out", required=True)
    ap.add_argument("--checkpoint-dir", default=None)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--keep-checkpoint", action="store_true")
    args = ap.parse_args(argv)
    cfg = RunConfig.from_dict(json.loads(args.config))
    try:
        run_and_record(cfg, args.out, checkpoint_dir=args.checkpoint_dir, fresh=args.fresh,
                       keep_checkpoint=args.keep_checkpoint, progress=world()[0] == 0)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
