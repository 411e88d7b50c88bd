"""One place that builds a training step's parts: AdamW, the learning-rate schedule, the gradient scaler, the step.

The training loop, the benchmarks (bench/model.py, bench/stock.py, bench/artefacts.py) and
scripts/whole_step_check.py all assemble their optimizer here, so each choice (fused AdamW on a GPU,
weight decay, transformers' schedules with Trainer's warm-up count, the fp16 scaler, the step mode)
is written once and differs between callers only where an argument says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .step import LossModule, TrainStep

AUTO = "auto"
"""``fused=AUTO``: fused AdamW on a CUDA device (one kernel per step; the whole step needs it), not on a CPU."""


@dataclass
class StepParts:
    """What ``assemble`` built; ``scheduler`` is None without a schedule, ``step`` None without a step mode."""

    optimizer: torch.optim.AdamW
    scheduler: torch.optim.lr_scheduler.LambdaLR | None
    scaler: torch.amp.GradScaler
    step: TrainStep | None


def make_scheduler(optimizer, schedule: str, warmup_ratio: float, total: int | None):
    """transformers' schedule helpers, with Trainer's warm-up count (ceil(warmup_ratio x steps)).

    ``total`` may be None for a constant schedule with no warm-up (a benchmark that runs until it is done)."""
    from transformers import get_scheduler

    name = {"linear": "linear", "constant": "constant_with_warmup"}[schedule]
    warmup = math.ceil(warmup_ratio * total) if warmup_ratio else 0
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total)


def data_parallel(model, device, world):
    """DDP over the ranks (it averages the gradients of each rank's share of a global batch), or None."""
    if world == 1:
        return None
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        LossModule(model), device_ids=[device] if device.type == "cuda" else None, broadcast_buffers=False
    )  # FAVOR+ features: same seed, same draws


def assemble(
    model,
    device,
    *,
    lr: float,
    weight_decay: float,
    step_mode: str | None = None,
    precision: str = "fp32",
    fused=AUTO,
    schedule: str | None = "constant",
    warmup_ratio: float = 0.0,
    total: int | None = None,
    max_grad_norm: float | None = None,
    world: int = 1,
    **step_options,
) -> StepParts:
    """AdamW over ``model``'s parameters (already on ``device``), its schedule, scaler and training step.

    fused: AUTO, or passed to AdamW as it is (None: PyTorch's default, as Trainer's was). schedule:
    'linear' or 'constant' (``make_scheduler``), or None for none (the caller steps the optimizer
    itself at its lr). The scaler is enabled under fp16 only. step_mode: a mode ``TrainStep`` runs
    ('eager', 'compiled', 'captured', 'whole'; resolve 'auto' first), or None for no step (callers
    that run a step of their own). world > 1 wraps the model in DDP for the step. ``step_options``
    go to ``TrainStep`` (backend, graph, compile_mode, dynamic).
    """
    device = torch.device(device)
    fused = device.type == "cuda" if fused == AUTO else fused
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused)
    scheduler = make_scheduler(optimizer, schedule, warmup_ratio, total) if schedule is not None else None
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    step = None
    if step_mode is not None:
        if scheduler is None:
            raise ValueError("a training step steps a schedule; give schedule='constant' or 'linear'")
        ddp = data_parallel(model, device, world)
        step = TrainStep(
            model,
            optimizer,
            scheduler,
            scaler,
            precision,
            device,
            step_mode,
            max_grad_norm=max_grad_norm,
            ddp=ddp,
            **step_options,
        )
    return StepParts(optimizer, scheduler, scaler, step)


def assemble_run(
    model, device, cfg, step_mode: str, precision: str, total: int, world: int = 1, shapes: int = 1
) -> StepParts:
    """A training run's parts as its RunConfig says: its lr, weight decay, schedule and clipping. A
    whole step over ``shapes`` > 1 batch shapes compiles its layers once, with symbolic sizes."""
    return assemble(
        model,
        device,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        step_mode=step_mode,
        precision=precision,
        schedule=cfg.schedule,
        warmup_ratio=cfg.warmup_ratio,
        total=total,
        max_grad_norm=cfg.max_grad_norm,
        world=world,
        **({"dynamic": True} if step_mode == "whole" and shapes > 1 else {}),
    )
