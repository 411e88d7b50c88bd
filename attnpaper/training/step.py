"""One training step, eager or captured: forward, backward and the optimizer, with no host sync.

``captured`` compiles the forward (and through AOTAutograd the backward) with
``torch.compile(mode="reduce-overhead")``: Inductor fuses the kernels and CUDA graphs replay them,
so the host issues a handful of launches per step instead of hundreds. ``compiled`` is the same
without CUDA graphs; ``eager`` is plain PyTorch. The fused AdamW step and the scheduler stay
outside the graph (the learning rate is a Python float that changes every step).
"""
from __future__ import annotations

import contextlib
import sys

import torch

from .batches import forward

STEP_MODES = ("auto", "eager", "compiled", "captured")
"""auto: captured on a CUDA GPU that Inductor supports (compute capability >= 7.0), else eager."""
RECOMPILE_LIMIT = 32  # packed batches take one graph per token bucket; more than this is a bug


def resolve_step_mode(requested: str, device, warn=True) -> str:
    """The step mode that can run here: ``requested`` unless it needs a GPU this machine lacks.

    A fallback is announced in one line on stderr; the caller records the mode that ran.
    """
    if requested not in STEP_MODES:
        raise ValueError(f"unknown step_mode {requested!r}; valid: {', '.join(STEP_MODES)}")
    device = torch.device(device)
    capable = device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 7
    if requested == "auto":
        return "captured" if capable else "eager"
    if requested in ("captured", "compiled") and not capable:
        if warn:
            where = "a CPU" if device.type != "cuda" else f"a GPU of compute capability {torch.cuda.get_device_capability(device)}"
            print(f"step_mode={requested!r} needs a CUDA GPU of compute capability >= 7.0, not {where}; "
                  "running the eager step", file=sys.stderr, flush=True)
        return "eager"
    return requested


def reset_compiler():
    """Forget compiled graphs (call between models: each model's graphs count toward dynamo's limit)."""
    torch._dynamo.reset()
    torch._dynamo.config.recompile_limit = RECOMPILE_LIMIT


def autocast(precision, device):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


class LossModule(torch.nn.Module):
    """The classifier's loss on a collated batch as a module's forward, for DDP to wrap."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return forward(self.model, batch)[0]


class TrainStep:
    """forward + backward + optimizer step for one collated batch; returns the loss (a device tensor).

    mode: 'eager', 'compiled' or 'captured' (see module doc). backend: the torch.compile backend
    ('inductor'; tests use 'aot_eager' to check graphs on a CPU without compiling kernels).
    """

    def __init__(self, model, optimizer, scheduler, scaler, precision, device, mode="eager",
                 backend="inductor", max_grad_norm=None, ddp=None):
        if mode not in STEP_MODES[1:]:
            raise ValueError(f"unknown step mode {mode!r}; valid: {', '.join(STEP_MODES[1:])}")
        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        self.precision, self.device, self.mode, self.max_grad_norm = precision, torch.device(device), mode, max_grad_norm
        self.ddp = ddp  # a DistributedDataParallel(LossModule(model)): gradients averaged over ranks
        self.fwd = self._loss
        if mode != "eager":
            reset_compiler()
            kw = {"mode": "reduce-overhead"} if mode == "captured" and backend == "inductor" else {}
            # static shapes, one graph per bucket: symbolic sizes would cost host time in every call.
            # Under DDP, dynamo splits the graph at gradient-bucket boundaries (so not fullgraph).
            self.fwd = torch.compile(self._loss, backend=backend, fullgraph=ddp is None, dynamic=False, **kw)

    def _loss(self, batch):
        with autocast(self.precision, self.device):
            return self.ddp(batch) if self.ddp is not None else forward(self.model, batch)[0]

    def __call__(self, batch):
        if self.mode == "captured":
            torch.compiler.cudagraph_mark_step_begin()
        loss = self.fwd(batch)
        self.scaler.scale(loss).backward()
        if self.max_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)  # no sync: a tensor scale
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach().clone()  # a graph's output is overwritten by its next replay
