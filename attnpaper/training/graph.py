"""The whole training step as one CUDA graph per batch shape: forward, backward, clipping, AdamW, the schedule.

Why a manual ``torch.cuda.CUDAGraph`` capture (PyTorch's "whole network capture" recipe) rather than
``torch.compile(mode="reduce-overhead")`` or ``make_graphed_callables``: at the small model's shape
the captured step is bound by the host, and what costs host time is exactly what those leave
outside their graphs or wrap in Python per call (cudagraph-tree bookkeeping, AOTAutograd's
runtime wrappers, the optimizer's and the scheduler's launches). Here the step's body (the
forward, compiled by Inductor without CUDA graphs so its kernels are fused; the backward; the
gradient scaler and clipping; the fused AdamW with ``capturable`` state and the learning rate as a
device tensor; the next learning rate read from a device table by a device step counter) runs
eagerly for its first calls of a shape (compile, warm-up, on a side stream) and is then recorded
once. After that a call copies the batch into static input buffers and replays the graph: no
Python in between, and no host sync.

Rules this relies on (each enforced here, not left to the caller):

- Every tensor the graph reads across replays is allocated outside it: parameters, optimizer
  state, the learning-rate table and counter, the scaler's scale, the static inputs, the loss slot.
  Everything a graph allocates (activations, gradients) is rewritten by each replay before it is
  read, so all shapes' graphs share one memory pool and gradients are not kept between steps:
  ``p.grad`` is None after every call (uncaptured too, as after TrainStep's eager step); read
  gradients inside the step's body. A call returns a copy of the loss slot, valid for good.
- Every graph records the training step: a call with the model in eval mode is refused (its
  graph would keep eval mode's dropout for good), as is an optimizer whose step a graph cannot
  record with an enabled gradient scaler (a non-fused one: the scaler reads its inf check on the host).
- Loading a checkpoint never replaces a tensor a graph points at: ``optimizer.load_state_dict``
  goes through hooks that copy into the existing state tensors, the scaler's loader fills in place,
  ``model.load_state_dict`` copies in place, and the step counter follows ``scheduler.last_epoch``
  (a resumed scheduler moves the device counter and learning rate at the next call).
- ``optimizer.state_dict()`` looks as in the eager step (a float ``lr``, the ``capturable`` flag the
  optimizer was made with), and the scheduler's ``last_epoch``, ``_step_count`` and ``_last_lr``
  are kept as its own ``step()`` would leave them; so checkpoints move between step modes.
  Do not call ``scheduler.step()`` yourself: this class steps the schedule.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR

LR_CHUNK = 1024  # steps per half of the device learning-rate table (refilled one half at a time)
UNCAPTURED_CALLS = 2  # per shape: the first call compiles, the second warms up; the third records


class LRTable:
    """A LambdaLR schedule as a device table the graph reads with a device step counter.

    Two halves of ``LR_CHUNK`` rows ([2 * LR_CHUNK, groups] float32) hold the rates of two
    consecutive chunks of steps; the host refills a half (one non-blocking copy) before the
    counter reaches it, so no total step count is needed and nothing is clamped. ``lr`` holds the
    current rate of each parameter group (a view per group sits in ``param_groups[i]["lr"]``).
    The host mirror (``host_step``, the rates as floats) keeps the scheduler's fields in step.
    """

    def __init__(self, scheduler, optimizer, device):
        if not isinstance(scheduler, LambdaLR):
            raise ValueError(
                f"step_mode='whole' tabulates a LambdaLR schedule (transformers' get_scheduler "
                f"returns one), not {type(scheduler).__name__}"
            )
        self.scheduler, self.device = scheduler, torch.device(device)
        groups = optimizer.param_groups
        self.table = torch.zeros(2 * LR_CHUNK, len(groups), dtype=torch.float32, device=self.device)
        self.host: list = [None] * (2 * LR_CHUNK)
        self.step_t = torch.zeros((), dtype=torch.long, device=self.device)  # steps taken, on the device
        self.lr = torch.zeros(len(groups), dtype=torch.float32, device=self.device)
        self.views = self.lr.unbind(0)  # param_groups[i]["lr"]: 0-dim views the fused AdamW reads on the device
        for group, view in zip(groups, self.views):
            group["lr"] = view
        self.seek(scheduler.last_epoch)

    def _load(self, chunk):
        """Tabulate steps [chunk * LR_CHUNK, (chunk + 1) * LR_CHUNK) into their half."""
        s = self.scheduler
        rows = [
            [float(base) * f(k) for f, base in zip(s.lr_lambdas, s.base_lrs)]
            for k in range(chunk * LR_CHUNK, (chunk + 1) * LR_CHUNK)
        ]
        half = slice((chunk % 2) * LR_CHUNK, (chunk % 2 + 1) * LR_CHUNK)
        self.host[half] = rows
        src = torch.tensor(rows, dtype=torch.float32)
        if self.device.type == "cuda":
            src = src.pin_memory()  # the copy is queued behind every replay that reads the old rows
        self.table[half].copy_(src, non_blocking=True)
        self.loaded[chunk % 2] = chunk

    def ensure(self, step):
        """Rows for ``step`` and ``step + 1`` (the rate a step sets for the next) are in the table."""
        for chunk in (step // LR_CHUNK, (step + 1) // LR_CHUNK):
            if self.loaded[chunk % 2] != chunk:
                self._load(chunk)
        self.ready_until = (max(self.loaded) + 1) * LR_CHUNK - 1  # steps below this need no load

    def seek(self, step):
        """Start at ``step`` (a new run or a resumed scheduler): counter and rates, no sync."""
        self.loaded = [-1, -1]  # re-tabulate: a loaded scheduler may bring other base rates
        self.ensure(step)
        self.step_t.fill_(step)
        self.lr.copy_(self.table[step % (2 * LR_CHUNK)])
        self.host_step = step

    def advance(self):
        """Device side, after the optimizer step: count it and set the next step's rate."""
        self.step_t.add_(1)
        row = torch.remainder(self.step_t, 2 * LR_CHUNK).view(1)
        self.lr.copy_(self.table.index_select(0, row)[0])

    def advance_host(self):
        """Host side of ``advance``, once per executed step: the scheduler's fields as its step() sets them."""
        self.host_step += 1
        s = self.scheduler
        s.last_epoch = self.host_step
        s._step_count += 1
        s._last_lr = list(self.host[self.host_step % (2 * LR_CHUNK)])

    def host_lrs(self) -> list:
        return list(self.host[self.host_step % (2 * LR_CHUNK)])


class _Shape:
    """One batch signature: its static input buffers, how often it ran, and its graph once recorded."""

    def __init__(self, batch, device):
        self.static = {
            k: torch.empty_like(v, device=device) if torch.is_tensor(v) else v for k, v in batch.items() if k[0] != "_"
        }
        self.inputs = [(k, v) for k, v in self.static.items() if torch.is_tensor(v)]
        self.calls = 0
        self.graph = None


def signature(batch) -> tuple:
    """What decides a graph: every tensor's shape and dtype and every other value (keys with "_" left out)."""
    return tuple((k, v.shape, v.dtype) if torch.is_tensor(v) else (k, v) for k, v in batch.items() if k[0] != "_")


class WholeStep:
    """Run ``body(batch) -> loss`` (forward, backward, clip, optimizer step; no zero_grad, no schedule)
    as a training step whose every call advances the learning-rate schedule on the device.

    graph=True (CUDA): per batch signature, ``UNCAPTURED_CALLS`` eager calls on a side stream, then
    one recorded CUDA graph replayed for every later call. graph=False: the same function, run
    eagerly every call (a CPU check of exactly what the graph records). A call returns the loss as
    a 0-dim float32 device tensor of its own; ``nonfinite`` is a device flag set once any loss was
    not finite. ``model`` (optional): the module being trained, refused in eval mode; ``scaler``
    (optional): the step's GradScaler, refused when enabled with a non-fused optimizer in a graph.
    """

    def __init__(self, body, optimizer, scheduler, device, graph=None, model=None, scaler=None):
        self.device = torch.device(device)
        self.graph = self.device.type == "cuda" if graph is None else graph
        self.body, self.optimizer, self.scheduler, self.model = body, optimizer, scheduler, model
        self._check_optimizer(scaler)
        if self.graph and self.device.type != "cuda":
            raise ValueError(f"graph=True records CUDA graphs and needs a CUDA device, not {self.device}")
        self._prepare_optimizer()
        self.schedule = LRTable(scheduler, optimizer, self.device)
        self.loss = torch.zeros((), dtype=torch.float32, device=self.device)  # the step writes its loss here
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        self.shapes: dict = {}
        self.pool = None  # one memory pool for every shape's graph
        self.stream = torch.cuda.Stream(self.device) if self.graph else None

    def _check_optimizer(self, scaler):
        """Refuse, before anything changes, an optimizer whose step this class cannot run or record."""
        opt = self.optimizer
        for g in opt.param_groups:
            if not g.get("fused") and not (self.graph and "capturable" in g):
                raise ValueError(
                    "step_mode='whole' needs an optimizer made with fused=True (or, on a GPU, one "
                    f"with a capturable option), not {type(opt).__name__} with fused={g.get('fused')}"
                )
            if not g.get("fused") and scaler is not None and scaler.is_enabled():
                raise ValueError(
                    f"step_mode='whole' with an enabled gradient scaler (fp16) needs fused=True: with "
                    f"{type(opt).__name__}(fused={g.get('fused')}) the scaler reads its inf check on the host "
                    "(.item()), which a CUDA graph cannot record; valid: fused=True, or precision bf16/fp32"
                )

    def _prepare_optimizer(self):
        opt = self.optimizer
        self.capturable = [g.get("capturable", False) for g in opt.param_groups]  # as made, for state_dict
        for g in opt.param_groups:
            if self.graph:
                g["capturable"] = True  # state steps on the device; capture is allowed
        opt.register_state_dict_post_hook(self._portable_state)
        opt.register_load_state_dict_pre_hook(self._hold_state)
        opt.register_load_state_dict_post_hook(self._restore_state)

    def _portable_state(self, optimizer, state):
        """optimizer.state_dict() as the eager step saves it: float rates (host mirror, no sync)."""
        for saved, lr, capturable in zip(state["param_groups"], self.schedule.host_lrs(), self.capturable):
            saved["lr"], saved["capturable"] = lr, capturable
        return state

    def _hold_state(self, optimizer, state):
        self._held = {(id(p), k): v for p, s in optimizer.state.items() for k, v in s.items() if torch.is_tensor(v)}

    def _restore_state(self, optimizer):
        """After optimizer.load_state_dict: the loaded values go into the tensors a graph may point at."""
        held = getattr(self, "_held", {})
        with torch.no_grad():
            for p, s in optimizer.state.items():
                for k, v in s.items():
                    old = held.get((id(p), k))
                    if old is not None and torch.is_tensor(v) and old.shape == v.shape:
                        old.copy_(v, non_blocking=True)
                        s[k] = old
                    elif k == "step" and torch.is_tensor(v):
                        s[k] = v.to(p.device, torch.float32)
        for g, view in zip(optimizer.param_groups, self.schedule.views):
            g["lr"] = view
            if self.graph:
                g["capturable"] = True
        self._held = {}

    def _run(self, static):
        """The recorded function: the step's body, then the loss slot, the finite flag and the schedule."""
        self.optimizer.zero_grad(set_to_none=True)  # host-only: gradients come fresh from backward
        loss = self.body(static).detach()
        self.loss.copy_(loss.float())
        self.nonfinite.logical_or_(~torch.isfinite(loss))
        self.schedule.advance()

    def _warm(self, static):
        cur = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(cur)
        with torch.cuda.stream(self.stream):
            self._run(static)
            self.optimizer.zero_grad(set_to_none=True)  # hold no gradients outside the graphs' pool
        cur.wait_stream(self.stream)

    def _record(self, shape):
        """Record the step once (nothing runs while recording) and keep the graph; syncs once."""
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)  # backward allocates the gradients inside the graph
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream, capture_error_mode="thread_local"):
            self._run(shape.static)
        self.optimizer.zero_grad(set_to_none=True)  # the graph's gradient buffers live in its pool
        self.pool = self.pool if self.pool is not None else graph.pool()
        shape.graph = graph

    def __call__(self, batch):
        if self.model is not None and not self.model.training:
            raise ValueError(
                "step_mode='whole' records the training step, and the model is in eval mode (its graph "
                "would keep eval's dropout for good); valid: call model.train() before stepping"
            )
        schedule = self.schedule
        if self.scheduler.last_epoch != schedule.host_step:  # a scheduler loaded from a checkpoint
            schedule.seek(self.scheduler.last_epoch)
        elif schedule.host_step >= schedule.ready_until:
            schedule.ensure(schedule.host_step)
        key = signature(batch)
        shape = self.shapes.get(key)
        if shape is None:
            shape = self.shapes[key] = _Shape(batch, self.device)
        for name, buf in shape.inputs:
            buf.copy_(batch[name], non_blocking=True)
        if shape.graph is None:
            if not self.graph:
                self._run(shape.static)
                self.optimizer.zero_grad(set_to_none=True)  # as after a replay: no gradients between steps
            elif shape.calls < UNCAPTURED_CALLS:
                self._warm(shape.static)
            else:
                self._record(shape)
        if shape.graph is not None:
            shape.graph.replay()
        shape.calls += 1
        schedule.advance_host()
        return self.loss.clone()  # its own tensor: the next call overwrites the slot

    @property
    def graphs(self) -> int:
        """How many graphs were recorded (one per batch signature that ran more than UNCAPTURED_CALLS times)."""
        return sum(s.graph is not None for s in self.shapes.values())
