"""An op-level profile of one eager training step per variant: calls, FLOPs and bytes of every aten op.

What runs: for each variant a fresh model at ``model``'s shape (random init, ``bench.model.model_config``),
AdamW as the training loop assembles it, and ``TrainStep`` in eager mode (the paper's Trainer ran eager),
on batches of IMDb's review lengths cut at ``length`` (the variant's layout: padded, or packed for the
padding-free variants). One step warms up (AdamW creates its state, lazy initialisations run); the next
``steps`` are counted under :class:`OpCounter`, each op filed under the phase of the step it ran in
(forward, backward, optimizer: ``PHASES``).

How each op call is counted (:class:`OpCounter`, a ``TorchDispatchMode``, so it sees the aten ops
autograd and the optimizer actually dispatch, after composite ops are decomposed):

* **FLOPs**: torch's own formulas (``torch.utils.flop_counter``'s registry: mm, addmm, bmm, baddbmm,
  convolutions, SDPA's fused kernels and FlashAttention, varlen attention), plus, for the CPU rehearsal,
  SDPA's CPU flash kernel and its backward with torch's SDPA formulas (``EXTRA_FORMULAS``). Every other op
  counts 0 FLOPs: torch has no formula for elementwise work (see analysis/roofline.py for how it is timed).
  An op with no formula that torch can decompose is decomposed and its parts counted, as FlopCounterMode does.
* **Bytes**: an estimate of the HBM traffic of an unfused kernel: each distinct tensor the op reads (its
  inputs), plus each distinct tensor it writes (its fresh outputs, and the inputs its schema marks as
  mutated, as in ``add_`` or the optimizer's in-place updates, which are read and written). Distinct:
  the same tensor passed twice counts once per call. A tensor counts the elements its strides reach (a
  broadcast ``expand`` of one row counts that row), times its element size. Views and allocations
  (``kernel`` False) move nothing and launch no kernel.
* **Elements**: the element count of the call's largest operand: what a per-element FLOP charge multiplies.

Rows are keyed by (phase, op, input shapes), so every call in a row has the same shapes and a per-row
roofline is a per-call one. Approximate by construction: real kernels fuse (an addmm's bias, fused AdamW,
FlashAttention's on-chip scores), caches catch re-reads, and CPU dispatch differs from CUDA's (SDPA picks
another kernel, AdamW is not fused): a CPU profile is a rehearsal, not a GPU's count.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..analysis.roofline import PHASES, PROFILE_KIND
from ..experiment.records import git_sha
from ..files import write_atomic
from ..training.measure import device_info

ALLOCATIONS = frozenset(
    {"aten.empty", "aten.empty_strided", "aten.empty_like", "aten.new_empty", "aten.new_empty_strided", "aten.resize_"}
)
"""Ops that allocate (or reshape an allocation) without touching its contents: no kernel, no bytes."""
NOT_OPS = ("profiler.",)
"""Namespaces of dispatched calls that are bookkeeping, not work (record_function's enter and exit)."""
PRECISIONS = ("auto", "fp32", "bf16")
"""auto: bf16 autocast on a GPU (as training runs), fp32 on a CPU."""
MAX_SHAPES = 160  # characters of a row's shape key kept (foreach ops take lists of hundreds of tensors)


def _extra_formulas() -> dict:
    """FLOP formulas torch lacks for kernels the CPU dispatches to: SDPA's CPU flash kernel, forward and
    backward, whose first arguments are those of the CUDA kernels torch does count."""
    from torch.utils import flop_counter as F

    aten = torch.ops.aten
    extra = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):  # the formulas on shapes (custom_mapping wraps)
        extra[aten._scaled_dot_product_flash_attention_for_cpu] = F.sdpa_flop.__wrapped__
        extra[aten._scaled_dot_product_flash_attention_for_cpu_backward] = F.sdpa_backward_flop.__wrapped__
    return extra


def flop_registry() -> dict:
    """Op packet -> FLOP formula (called with the op's arguments and ``out_val``): torch's, plus EXTRA."""
    import importlib.util

    from torch.utils.flop_counter import FlopCounterMode

    if importlib.util.find_spec("torch.nn.attention.varlen") is not None:
        import torch.nn.attention.varlen  # noqa: F401  # registers varlen attention's formulas

    return FlopCounterMode(display=False, custom_mapping=_extra_formulas()).flop_registry


def _tensors(tree) -> list:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _key(t) -> tuple:
    """What makes two tensor arguments the same data: storage, offset, shape, strides, dtype."""
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def tensor_bytes(t) -> int:
    """Bytes a kernel reads or writes for ``t``: the elements its strides reach (at most its numel; a
    broadcast dimension of stride 0 adds none), times its element size."""
    if t.numel() == 0:
        return 0
    span = 1 + sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride()))
    return min(t.numel(), span) * t.element_size()


def _mutated(func, args, kwargs) -> list:
    """The tensor arguments ``func``'s schema marks as written (``Tensor(a!)``), lists of them included."""
    out = []
    for i, a in enumerate(func._schema.arguments):
        if a.alias_info is not None and a.alias_info.is_write:
            out += _tensors(args[i] if i < len(args) else kwargs.get(a.name))
    return out


def call_bytes(func, args, kwargs, out) -> tuple[int, int]:
    """(bytes, elements) of one call: distinct inputs read, distinct fresh outputs and mutated inputs
    written (module doc); elements of the largest operand."""
    reads = {_key(t): t for t in _tensors((args, kwargs))}
    storages = {k[0] for k in reads}
    writes = {_key(t): t for t in _mutated(func, args, kwargs)}
    for t in _tensors(out):  # outputs that are (views of) inputs are written only if mutated, counted above
        if t.untyped_storage().data_ptr() not in storages:
            writes[_key(t)] = t
    every = [*reads.values(), *writes.values()]
    nbytes = sum(tensor_bytes(t) for t in every)
    return nbytes, max((t.numel() for t in every), default=0)


def _shapes(args) -> str:
    """The row key's shapes: dtype[shape] per tensor argument, ``N tensors`` per list of them."""
    parts = []
    for a in args:
        if isinstance(a, torch.Tensor):
            parts.append(f"{str(a.dtype).removeprefix('torch.')}{list(a.shape)}")
        elif isinstance(a, (list, tuple)) and a and all(isinstance(x, torch.Tensor) for x in a):
            parts.append(f"{len(a)} tensors")
    return " ".join(parts)[:MAX_SHAPES]


class OpCounter(TorchDispatchMode):
    """Calls, FLOPs, bytes and elements of every aten op dispatched inside it, by (phase, op, shapes).

    ``phase`` is set by the caller as the step moves on. ``rows()`` returns the counts as a list of dicts
    (module doc: what each field counts)."""

    def __init__(self, registry=None):
        super().__init__()
        self.registry = flop_registry() if registry is None else registry
        self.phase = PHASES[0]
        self.counts: dict = defaultdict(lambda: {"calls": 0, "flops": 0, "bytes": 0, "elements": 0})
        self.kernel: dict = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func._overloadpacket
        if packet not in self.registry:  # as FlopCounterMode: count the parts of what decomposes
            with self:
                r = func.decompose(*args, **kwargs)
            if r is not NotImplemented:
                return r
        out = func(*args, **kwargs)
        name = str(packet)
        if name.startswith(NOT_OPS):
            return out
        kernel = not func.is_view and name not in ALLOCATIONS
        key = (self.phase, name, _shapes(args))
        row = self.counts[key]
        row["calls"] += 1
        if packet in self.registry:
            row["flops"] += int(self.registry[packet](*args, **kwargs, out_val=out))
        if kernel:
            nbytes, elements = call_bytes(func, args, kwargs, out)
            row["bytes"] += nbytes
            row["elements"] += elements
        self.kernel[key] = kernel
        return out

    def rows(self) -> list[dict]:
        """One dict per (phase, op, shapes), in phase order then by bytes, most first."""
        order = {p: i for i, p in enumerate(PHASES)}
        rows = [
            {"phase": p, "op": op, "shapes": s, **c, "kernel": self.kernel[(p, op, s)]}
            for (p, op, s), c in self.counts.items()
        ]
        return sorted(rows, key=lambda r: (order[r["phase"]], -r["bytes"], -r["flops"], r["op"], r["shapes"]))


def counted_step(step, counter: OpCounter, batch):
    """One eager ``TrainStep`` call with ``counter.phase`` following it: forward while the loss is computed,
    backward from its return until AdamW's step begins, optimizer from there (scheduler, zero_grad, the
    loss's copy: the step's tail)."""

    def forward(b):
        counter.phase = "forward"
        loss = original(b)
        counter.phase = "backward"
        return loss

    def optimizer_begins(*_):
        counter.phase = "optimizer"

    original = step.fwd
    step.fwd = forward
    hook = step.optimizer.register_step_pre_hook(optimizer_begins)
    try:
        with counter:
            return step(batch)
    finally:
        step.fwd = original
        hook.remove()


def resolve_precision(precision: str, device) -> str:
    """``auto``: bf16 on a GPU (the training default there), fp32 on a CPU; otherwise as given."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def profile_variant(variant, model, length, batch_size, lengths, steps, device, precision) -> dict:
    """One fresh model of ``variant``: a warm-up step, then ``steps`` eager steps counted (module doc)."""
    from ..model.build import build_model
    from ..training import batches as P
    from ..training.assemble import assemble
    from ..training.config import RunConfig
    from .model import make_batches, model_config

    device = torch.device(device)
    layout = RunConfig(variant=variant).resolved_layout()
    net = build_model(model_config(model, length), variant, num_labels=2).to(device)
    parts = assemble(net, device, lr=5e-5, weight_decay=0.01, step_mode="eager", precision=precision)
    chunk = P.chunk_for(variant, layout, length)
    batches = make_batches(length, batch_size, lengths, layout, None, n_batches=steps + 1, chunk=chunk)
    data = [P.to_device(b, device) for b in batches]
    parts.step(data[0])  # warm-up: AdamW's state, lazy initialisation
    counter = OpCounter()
    t0 = time.perf_counter()
    for b in data[1:]:
        counted_step(parts.step, counter, b)
    opt = parts.optimizer.defaults
    return {
        "layout": layout,
        "steps": steps,
        "real_tokens": sum(P.real_tokens(b) for b in batches[1:]),
        "slot_tokens": sum(P.slot_tokens(b) for b in batches[1:]),
        "batch_shapes": sorted({str(list(b["input_ids"].shape)) for b in batches[1:]}),
        "attention": getattr(net.config, "_attn_implementation", None),
        "optimizer": {"name": type(parts.optimizer).__name__, "fused": opt.get("fused"), "foreach": opt.get("foreach")},
        "counted_s": time.perf_counter() - t0,
        "rows": counter.rows(),
    }


def check_profile_args(variants, model, length, batch_size, steps, precision, source) -> None:
    """Names, sizes, the length against ``model``'s positions and the data source, each refused in one
    line (ValueError) before anything is read, built or counted."""
    from ..variants import VARIANTS
    from .step import check_lengths, check_lengths_source, model_positions

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"unknown variant(s) {', '.join(unknown) or '(none given)'}; valid: {', '.join(VARIANTS)}")
    for name, value, low in (("--batch-size", batch_size, 2), ("--steps", steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown --precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    check_lengths([length], model_positions(model), flag="--length")
    check_lengths_source(source)


def profile_ops(variants, model, length, batch_size, steps=1, source=None, precision="auto", device=None, log=print):
    """The op profile of every variant in this process (one fresh model each): the report as a dict, with
    the device, library versions and git commit it came from."""
    from ..training import data as D
    from .step import imdb_lengths

    source = source or D.default_source()
    check_profile_args(variants, model, length, batch_size, steps, precision, source)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = resolve_precision(precision, device)
    lengths = imdb_lengths(source, length)
    versions = device_info()
    report = {
        "kind": PROFILE_KIND,
        "model": model,
        "length": length,
        "batch_size": batch_size,
        "steps": steps,
        "precision": precision,
        "step_mode": "eager",
        "data": str(source),
        "device": versions["device"],
        "versions": versions,
        "git_sha": git_sha(),
        "variants": {},
    }
    for v in variants:
        report["variants"][v] = p = profile_variant(v, model, length, batch_size, lengths, steps, device, precision)
        calls = sum(r["calls"] for r in p["rows"] if r["kernel"]) / steps
        log(f"{v:9s} {calls:7.0f} kernel calls a step, {len(p['rows'])} rows, counted in {p['counted_s']:.1f} s")
    return report


def save(report, out) -> None:
    """Write ``report`` as JSON to ``out`` (atomically)."""
    write_atomic(out, json.dumps(report, indent=1, default=str))
