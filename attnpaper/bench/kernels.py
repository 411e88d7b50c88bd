"""Attention kernels alone, over sequence length: time, TFLOP/s and peak memory of each mechanism.

Every mechanism takes q, k, v as the projections leave them, [B, N, H, D] (DistilBERT's 12 x 64),
and returns [B, N, H, D]. Tokens per batch are held constant (B = tokens / N), so an O(N^2)
kernel's time grows linearly in N and an O(N) one stays flat. Timing: CUDA events around each
call, warm-up first, median of repeats, inputs rotated among several sets (each larger than L2).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..attention import LayerAttention
from ..attention.exact import has_flash_attn, has_torch_varlen
from ..attention.plug import attnpaper_attention
from ..training.measure import elapsed_ms, mark, sync

HEADS, HEAD_DIM = 12, 64
PASSES = ("fwd", "fwd_bwd")
BWD_FACTOR = 2.5  # FlashAttention papers: backward = 2.5 x forward FLOPs (non-causal)
ROTATIONS = 3  # input sets cycled through, so no call finds its inputs in L2
MB = 2**20
COMPILE_BACKEND = "inductor"  # tests set "aot_eager": the same graphs, traced without compiling kernels


@dataclass(frozen=True)
class Mechanism:
    """One attention mechanism: ``build(batch, seq_len, device)`` returns f(q, k, v) on [B, N, H, D]."""

    name: str
    exact: bool  # computes softmax attention exactly (TFLOP/s are counted for these)
    compiled: bool
    build: Callable
    available: Callable = lambda device: True
    what: str = ""


class _Holder(torch.nn.Module):
    """Stands in for a transformers attention module: carries the layer's settings (``attnpaper``)."""

    def __init__(self, layer):
        super().__init__()
        self.attnpaper = layer


def _cu_seqlens(batch, seq_len, device):
    """int32 [B+1]: B sequences of seq_len tokens each, computed on the CPU as the collator does."""
    return torch.arange(0, (batch + 1) * seq_len, seq_len, dtype=torch.int32).to(device)


def _eager(batch, seq_len, device):
    from transformers.models.distilbert.modeling_distilbert import eager_attention_forward

    module = torch.nn.Module()  # train mode; dropout 0, as in every variant here

    def run(q, k, v):  # [B, N, H, D] -> [B, H, N, D] views -> [B, N, H, D]
        return eager_attention_forward(module, q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None)[0]

    return run


def _sdpa(backend):
    def build(batch, seq_len, device):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        chosen = getattr(SDPBackend, backend)

        def run(q, k, v):  # [B, N, H, D] -> [B, H, N, D] views -> [B, N, H, D] view
            with sdpa_kernel([chosen]):
                out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            return out.transpose(1, 2)

        return run

    return build


def _varlen(batch, seq_len, device):
    from torch.nn.attention.varlen import varlen_attn

    cu = _cu_seqlens(batch, seq_len, device)

    def run(q, k, v):  # [B, N, H, D] -> packed [T, H, D] (a view) -> [B, N, H, D]
        t = batch * seq_len
        out = varlen_attn(q.view(t, HEADS, -1), k.view(t, HEADS, -1), v.view(t, HEADS, -1), cu, cu, seq_len, seq_len)
        return out.view(q.shape)

    return run


def _attnpaper_flash(batch, seq_len, device):
    holder = _Holder(LayerAttention("exact", HEAD_DIM)).to(device)
    cu = _cu_seqlens(batch, seq_len, device)

    def run(q, k, v):  # packed as transformers hands it over: [1, H, T, D] views of [B, N, H, D]
        t = batch * seq_len
        qp, kp, vp = (x.view(1, t, HEADS, -1).transpose(1, 2) for x in (q, k, v))
        out, _ = attnpaper_attention(holder, qp, kp, vp, None, cu_seq_lens_q=cu, max_length_q=seq_len)
        return out.view(q.shape)  # [1, T, H, D] -> [B, N, H, D]

    return run


def _flash_attn_pkg(batch, seq_len, device):
    from flash_attn import flash_attn_func

    return lambda q, k, v: flash_attn_func(q, k, v)  # takes and returns [B, N, H, D]


def _linear(feature_map, num_features=None, compiled=True):
    """Built once per device, for every length: compiled with dynamic shapes, so it compiles twice
    (without and with autograd) instead of once per length."""
    built = {}

    def build(batch, seq_len, device):
        key = (str(device), COMPILE_BACKEND)
        if key not in built:
            layer = LayerAttention("linear", HEAD_DIM, feature_map=feature_map, num_features=num_features)
            holder = _Holder(layer).to(device)

            def run(q, k, v):  # [B, N, H, D] -> [B, H, N, D] views -> [B, N, H, D], as in the model
                return attnpaper_attention(holder, q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None)[0]

            built[key] = torch.compile(run, fullgraph=True, dynamic=True, backend=COMPILE_BACKEND) if compiled else run
        return built[key]

    return build


def _cuda(device):
    return device.type == "cuda"


MECHANISMS = {
    m.name: m
    for m in [
        Mechanism("eager", True, False, _eager, what="transformers' eager softmax (matmul, softmax, matmul)"),
        Mechanism("sdpa-flash", True, False, _sdpa("FLASH_ATTENTION"), what="SDPA, FlashAttention-2 backend"),
        Mechanism("sdpa-cudnn", True, False, _sdpa("CUDNN_ATTENTION"), _cuda, "SDPA, cuDNN backend"),
        Mechanism("sdpa-efficient", True, False, _sdpa("EFFICIENT_ATTENTION"), _cuda, "SDPA, memory-efficient backend"),
        Mechanism(
            "varlen",
            True,
            False,
            _varlen,
            lambda d: _cuda(d) and has_torch_varlen(),
            "torch.nn.attention.varlen.varlen_attn (FlashAttention-2 varlen), called directly",
        ),
        Mechanism(
            "attnpaper-flash",
            True,
            False,
            _attnpaper_flash,
            what="attnpaper's flash layer on packed tokens (varlen_attention through the plug)",
        ),
        Mechanism(
            "flash-attn",
            True,
            False,
            _flash_attn_pkg,
            lambda d: _cuda(d) and has_flash_attn(),
            "the flash-attn package's flash_attn_func",
        ),
        Mechanism("elu", False, True, _linear("elu"), what="attnpaper elu+1 linear attention, torch.compile"),
        *[
            Mechanism(
                f"favor+{m}", False, True, _linear("favor+", m), what=f"attnpaper FAVOR+, {m} features, torch.compile"
            )
            for m in (64, 128, 266)
        ],
        Mechanism("elu-eager", False, False, _linear("elu", compiled=False), what="attnpaper elu+1, eager"),
        Mechanism(
            "favor+266-eager",
            False,
            False,
            _linear("favor+", 266, compiled=False),
            what="attnpaper FAVOR+, 266 features, eager",
        ),
    ]
}
"""Mechanism name -> Mechanism, in the order they are measured."""


def exact_flops(batch, seq_len, pass_="fwd", heads=HEADS, head_dim=HEAD_DIM) -> float:
    """FLOPs as the FlashAttention papers count them: 4 B H N^2 d forward, 2.5x that backward."""
    f = 4.0 * batch * heads * seq_len**2 * head_dim
    return f * (1 + BWD_FACTOR) if pass_ == "fwd_bwd" else f


def time_ms(call, sets, warmup, repeats, device) -> float:
    """Median ms of call(*sets[i % len(sets)]) over ``repeats`` calls, after ``warmup`` calls."""
    for i in range(warmup):
        call(*sets[i % len(sets)])
    sync(device)
    marks = [mark(device)]
    for i in range(repeats):
        call(*sets[i % len(sets)])
        marks.append(mark(device))
    return statistics.median(elapsed_ms(marks, device))  # one per call, back to back


def peak_mb(call, args, device):
    """Memory a call allocates above what was allocated before it (its working memory), in MB."""
    if not _cuda(device):
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    call(*args)
    sync(device)
    return (torch.cuda.max_memory_allocated() - base) / MB


def input_sets(batch, seq_len, device, rotations=ROTATIONS, dtype=torch.bfloat16, seed=0):
    """``rotations`` sets of (q, k, v, dout), each [B, N, H, D], standard normal (never zeros)."""
    g = torch.Generator(device=device).manual_seed(seed)
    shape = (batch, seq_len, HEADS, HEAD_DIM)
    return [
        tuple(torch.randn(shape, generator=g, device=device, dtype=dtype) for _ in range(4)) for _ in range(rotations)
    ]


def _callers(fn):
    """fwd (no autograd) and fwd_bwd (gradients of q, k, v for a given output gradient) calls."""

    def fwd(q, k, v, dout):
        with torch.no_grad():
            return fn(q, k, v)

    def fwd_bwd(q, k, v, dout):
        q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
        return torch.autograd.grad(fn(q, k, v), (q, k, v), dout)

    return {"fwd": fwd, "fwd_bwd": fwd_bwd}


def measure(mech: Mechanism, batch, seq_len, passes, device, warmup, repeats, sets) -> list[dict]:
    """Rows for one mechanism at one length, one per pass; an out-of-memory is a row with status 'oom'."""
    base = {"mechanism": mech.name, "seq_len": seq_len, "batch": batch, "exact": mech.exact, "compiled": mech.compiled}
    if not mech.available(device):
        return [
            {
                **base,
                "pass": p,
                "ms": None,
                "tflops": None,
                "peak_mb": None,
                "status": "unavailable",
                "error": f"not available on {device}",
            }
            for p in passes
        ]
    rows, fn = [], None
    for p in passes:
        row = {**base, "pass": p, "ms": None, "tflops": None, "peak_mb": None}
        try:
            fn = fn or mech.build(batch, seq_len, device)
            call = _callers(fn)[p]
            t0 = time.perf_counter()
            call(*sets[0])  # first call: compiles (torch.compile) or picks a kernel
            sync(device)
            row["first_call_s"] = time.perf_counter() - t0
            row["ms"] = time_ms(call, sets, warmup, repeats, device)
            row["peak_mb"] = peak_mb(call, sets[0], device)
            if mech.exact:
                row["tflops"] = exact_flops(batch, seq_len, p) / (row["ms"] * 1e-3) / 1e12
            row["status"] = "ok"
        except torch.OutOfMemoryError as err:
            row.update(status="oom", error=_first_line(err))
        except RuntimeError as err:  # e.g. an SDPA backend that cannot take these inputs on this GPU
            none = any(s in str(err).lower() for s in ("no available kernel", "no viable backend"))
            row.update(status="unavailable" if none else "error", error=_first_line(err))
        rows.append(row)
        gc.collect()
        if _cuda(device):
            torch.cuda.empty_cache()
    return rows


def _first_line(err) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


def matmul_tflops(device, n=8192, repeats=20) -> float | None:
    """Measured bf16 matrix-product rate (n x n x n), the ceiling TFLOP/s are compared with."""
    if not _cuda(device):
        return None
    g = torch.Generator(device=device).manual_seed(1)
    sets = [
        (
            torch.randn(n, n, generator=g, device=device, dtype=torch.bfloat16),
            torch.randn(n, n, generator=g, device=device, dtype=torch.bfloat16),
        )
        for _ in range(2)
    ]
    ms = time_ms(torch.matmul, sets, 5, repeats, device)
    del sets
    torch.cuda.empty_cache()
    return 2 * n**3 / (ms * 1e-3) / 1e12
