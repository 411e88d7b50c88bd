"""One training step, eager, captured or whole: forward, backward and the optimizer, with no host sync.

``whole`` (the default on a GPU) records the entire step, forward, backward, clipping, the fused
AdamW update and the learning-rate schedule, as one CUDA graph per batch shape (see
attnpaper.training.graph): the host copies the batch in and replays. ``captured`` compiles the
forward (and through AOTAutograd the backward) with ``torch.compile(mode="reduce-overhead")``:
Inductor fuses the kernels and CUDA graphs replay them, while the fused AdamW step and the
scheduler stay outside the graph (the learning rate is a Python float that changes every step).
``compiled`` is the same without CUDA graphs; ``eager`` is plain PyTorch. Every mode runs the same
body (``TrainStep._update``).

What is compiled: ``captured`` and ``compiled`` compile the whole forward as one graph; ``whole``
compiles the embeddings and each encoder layer instead (PyTorch's "regional compilation" recipe):
the layers of one kind share their code, so Dynamo and Inductor compile one layer (two for hybrid,
one exact and one linear) per batch shape (or once for every shape with ``dynamic``: packed
runs at 512 tokens meet six token counts) instead of the whole network, which cut compile time
2-4x on a CPU (scripts/compile_time.py) and to 3-12 s per run on the H200. The embeddings are a
region of their own because uncompiled their backward sorts the token ids (a radix sort, ~0.1 ms a
step at the small model's shape); the [CLS] gather and the head stay uncompiled: inside the whole
step's CUDA graph that costs no host time, only a few unfused kernels.

Masks in ``whole`` mode: transformers' own attention (the baseline's eager, and sdpa) gets a 4D mask
from ``batches.expanded_mask``, which transformers passes through unchanged, instead of the [B, N]
one. From a [B, N] mask with no padding transformers builds no mask at all (None) unless it is
tracing, and it counts CUDA-graph capture as tracing: the warm-up calls would give the compiled
layers None and the capture a tensor, so the layer recompiles inside the capture and the capture
fails. The 4D mask looks the same in both, and holds the same values. (Some transformers versions
also build the eager mask from a host value, ``torch.tensor(0.0)``, a copy a CUDA graph cannot
record outside compiled code.)
"""

from __future__ import annotations

import contextlib
import sys

import torch

from ..model.auto import encoder_layers
from .batches import EXPANDED_MASK_IMPLEMENTATIONS, forward
from .graph import WholeStep

STEP_MODES = ("auto", "eager", "compiled", "captured", "whole")
"""auto: whole on a CUDA GPU that Inductor supports (compute capability >= 7.0), else eager."""
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
        return "whole" if capable else "eager"
    if requested in ("captured", "compiled", "whole") and not capable:
        if warn:
            where = (
                "a CPU"
                if device.type != "cuda"
                else f"a GPU of compute capability {torch.cuda.get_device_capability(device)}"
            )
            print(
                f"step_mode={requested!r} needs a CUDA GPU of compute capability >= 7.0, not {where}; "
                "running the eager step",
                file=sys.stderr,
                flush=True,
            )
        return "eager"
    return requested


def regional_layers(model) -> list:
    """The modules the whole step compiles one by one: the embeddings and each encoder layer (regional)."""
    return [model.base_model.embeddings, *encoder_layers(model)]


@contextlib.contextmanager
def compiled_calls(layers, compiled):
    """Each layer calls its compiled code (what ``Module.compile`` installs) inside the block only, so
    calls outside it stay eager."""
    for layer, fn in zip(layers, compiled, strict=True):
        layer._compiled_call_impl = fn
    try:
        yield
    finally:
        for layer in layers:
            layer._compiled_call_impl = None


def reset_compiler():
    """Forget compiled graphs (call between models: each model's graphs count toward dynamo's limit)."""
    torch._dynamo.reset()


def recompile_limit():
    """Dynamo's recompile limit raised to RECOMPILE_LIMIT (one graph per token bucket; never lowered)
    inside the with block only: dynamo reads it as it recompiles, and the rest of the process keeps its own."""
    return torch._dynamo.config.patch(recompile_limit=max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT))


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

    mode: 'eager', 'compiled', 'captured' or 'whole' (see module doc). backend: the torch.compile
    backend ('inductor'; tests use 'aot_eager' to check graphs on a CPU without compiling kernels;
    None in whole mode: the forward is not compiled). ``mode`` afterwards names what runs: whole
    falls back to captured, with one line on stderr, under DDP (gradients are averaged by DDP's
    hooks outside one graph).

    Whole mode: graph (default: on a CUDA device) records CUDA graphs, graph=False runs the same
    step uncaptured (a CPU check); compile_mode is Inductor's mode (default None; never one with
    CUDA graphs). It refuses a model in eval mode and, with an enabled scaler, a non-fused
    optimizer; ``nonfinite`` is a device flag set by any non-finite loss. Checkpoints: save and
    load optimizer, scheduler and scaler as in every mode (or with ``state_dict``/``load_state_dict``
    here); loads copy into the tensors the graphs read, and the schedule follows the loaded
    ``scheduler.last_epoch``. Never call ``scheduler.step()`` in whole mode: the step does.
    ``dynamic`` (whole mode): True compiles the layers once for every packed token count (symbolic
    sizes, no host cost there: the CUDA graph replays), False one compile per batch shape.
    """

    def __init__(
        self,
        model,
        optimizer,
        scheduler,
        scaler,
        precision,
        device,
        mode="eager",
        backend="inductor",
        max_grad_norm=None,
        ddp=None,
        graph=None,
        compile_mode=None,
        dynamic=False,
    ):
        if mode not in STEP_MODES[1:]:
            raise ValueError(f"unknown step mode {mode!r}; valid: {', '.join(STEP_MODES[1:])}")
        if mode == "whole" and ddp is not None:
            print(
                "step_mode='whole' does not run under DDP (its gradient all-reduce runs outside one graph); "
                "running the captured step",
                file=sys.stderr,
                flush=True,
            )
            mode = "captured"
        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        self.precision, self.device, self.mode, self.max_grad_norm = (
            precision,
            torch.device(device),
            mode,
            max_grad_norm,
        )
        self.ddp = ddp  # a DistributedDataParallel(LossModule(model)): gradients averaged over ranks
        self.fwd = self._loss
        self.whole = None
        # whole mode, transformers' eager or sdpa attention: a 4D mask, the same in warm-up and capture (module doc)
        impl = getattr(model.config, "_attn_implementation", None)
        self.expand_mask = mode == "whole" and impl in EXPANDED_MASK_IMPLEMENTATIONS
        self.layers, self.compiled = [], []
        self.dynamic = bool(dynamic) and mode == "whole"  # the record's compiled_dynamic
        self.compiles = mode != "eager" and backend is not None  # dynamo compiles in self.fwd
        if self.compiles:
            reset_compiler()
            kw = {}
            if backend == "inductor" and mode == "captured":
                kw = {"mode": "reduce-overhead"}
            elif backend == "inductor" and mode == "whole" and compile_mode:
                if "no-cudagraphs" not in compile_mode and compile_mode != "default":
                    raise ValueError(
                        f"compile_mode {compile_mode!r} would record CUDA graphs inside the whole "
                        "step's graph; valid: default, max-autotune-no-cudagraphs"
                    )
                kw = {"mode": compile_mode}
            # static shapes, one graph per bucket: symbolic sizes would cost host time in every call,
            # except in whole mode, whose CUDA graph replays without the host (``dynamic``)
            if mode == "whole":
                # regional: one compile serves every layer of a kind (see module doc)
                self.layers = regional_layers(model)
                self.compiled = [
                    torch.compile(layer._call_impl, backend=backend, fullgraph=True, dynamic=dynamic, **kw)
                    for layer in self.layers
                ]
                self.fwd = self._regional_loss
            else:  # under DDP, dynamo splits the graph at gradient-bucket boundaries (so not fullgraph)
                self.fwd = torch.compile(self._loss, backend=backend, fullgraph=ddp is None, dynamic=False, **kw)
        if mode == "whole":
            self.whole = WholeStep(
                self._update, optimizer, scheduler, self.device, graph=graph, model=model, scaler=scaler
            )

    def _loss(self, batch):
        with autocast(self.precision, self.device):
            if self.ddp is not None:
                return self.ddp(batch)
            return forward(self.model, batch, expand_mask=self.expand_mask)[0]

    def _regional_loss(self, batch):
        """Whole mode: the loss with each layer calling its compiled code (what ``Module.compile``
        installs), only inside this call, so evaluation and the caller's own calls stay eager."""
        with compiled_calls(self.layers, self.compiled):
            return self._loss(batch)

    def _update(self, batch):
        """The step's body in every mode: loss, scaled backward, clipping, the (scaled) optimizer step."""
        with recompile_limit() if self.compiles else contextlib.nullcontext():
            loss = self.fwd(batch)
        self.scaler.scale(loss).backward()
        if self.max_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)  # no sync: a tensor scale
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss

    def __call__(self, batch):
        if self.whole is not None:
            return self.whole(batch)
        if self.mode == "captured":
            torch.compiler.cudagraph_mark_step_begin()
        loss = self._update(batch)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach().clone()  # a graph's output is overwritten by its next replay

    @property
    def nonfinite(self):
        """Whole mode: a device flag, True once any loss was not finite (None in other modes)."""
        return self.whole.nonfinite if self.whole is not None else None

    def state_dict(self) -> dict:
        """What the next step depends on besides the model: optimizer, scheduler and scaler states."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Load a ``state_dict`` (from any mode); in whole mode, into the tensors the graphs read."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
