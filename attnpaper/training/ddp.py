"""Data-parallel runs: one process per GPU, launched by torchrun, gradients averaged by PyTorch DDP.

A run with ``nproc_per_node`` > 1 keeps the single-GPU experiment: the same global batch (each of
the N processes takes every N-th row of it), the same learning rate, the same data order and the
same number of steps, so its result matches a one-GPU run within seed noise. Rank 0 measures and
writes the record (its GPU's time and memory); the test split is shared out and the counts summed.
On a CPU the processes talk through gloo (what CI tests); on GPUs through NCCL.
"""

from __future__ import annotations

import os

import torch


def world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) outside torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def setup(device: torch.device) -> torch.device:
    """Join the process group (NCCL on GPUs, gloo on CPUs); the device this rank trains on."""
    import torch.distributed as dist

    _, size, local = world()
    if size == 1 or dist.is_initialized():
        return torch.device(f"cuda:{local}") if device.type == "cuda" and size > 1 else device
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device(f"cuda:{local}")
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None
    )
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
