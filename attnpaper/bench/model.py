"""The whole training step over sequence length: time, GPU busy time, peak memory, attention's share.

DistilBERT-base's shape with position embeddings extended to N (random init), tokens per batch
held constant (batch = tokens / N). Up to 512 tokens the reviews have IMDb's lengths (so padding is
real); beyond, every sequence is N tokens long. Each (variant, N) builds a fresh model, optimizer and
``TrainStep``; peak memory is counted from before warm-up, so CUDA graphs' pools are included. The step
mode is the training default (``auto``: whole, one CUDA graph per step, on a GPU).
"""

from __future__ import annotations

import gc
import math
import re
import statistics
import time

import numpy as np
import torch

from ..model.build import build_model, resolve_model
from ..model.families import family_of
from ..training import batches as P
from ..training.assemble import assemble
from ..training.config import RunConfig
from ..training.loop import float32_matmuls
from ..training.measure import (
    MB,
    WARMUP_CALLS,
    elapsed_ms,
    mark,
    memory_breakdown,
    start_profiler,
    stop_profiler,
    sync,
    trace_times,
)
from ..training.step import reset_compiler, resolve_step_mode
from .step import random_split

IMDB_MAX = 512  # up to this length the batches follow IMDb's lengths; beyond, full-length sequences
ATTENTION_KERNEL = re.compile(r"flash_fwd|flash_bwd|fmha|sdpa|attention", re.IGNORECASE)
"""Names of fused attention kernels (FlashAttention-2, cuDNN's sdpa, memory-efficient fmha).
Eager and linear attention run as generic matmuls and fused elementwise kernels: not identifiable."""
PROFILE_STEPS = 5
N_BATCHES = 8  # distinct batches, cycled


def model_config(model, seq_len):
    """The model's config with at least ``seq_len`` position embeddings (new ones are random)."""
    config = resolve_model(model)
    if isinstance(config, str):
        raise ValueError(f"model must be a random-init alias such as 'distilbert-base-random', not {model!r}")
    config = config.__class__.from_dict(config.to_dict())
    first = family_of(config).first_position(config)  # RoBERTa numbers tokens from padding_idx + 1
    config.max_position_embeddings = max(config.max_position_embeddings, seq_len + first)
    return config


def make_batches(seq_len, batch, lengths, layout, tokens, n_batches=N_BATCHES, seed=0, chunk=1) -> list[dict]:
    """Static batches of random ids: IMDb lengths (cut at seq_len) up to IMDB_MAX, full length beyond.

    Packed token buckets: a quarter of ``tokens`` per batch, or, with tokens=None, the training
    loop's default (batches.bucket_range), so a row at the paper's batch matches the bench's batches."""
    source = np.minimum(lengths, seq_len) if seq_len <= IMDB_MAX else np.array([seq_len])
    split = random_split(source, n_batches * batch, seed=seed + seq_len)
    quarter = None if tokens is None else min(max(tokens // 4, seq_len), 64 * seq_len)
    bucket = None if layout == "padded" else quarter  # token bucket (None: the Collator's default)
    bucket = bucket and chunk * math.ceil(bucket / chunk)  # packed linear: whole chunks
    collate = P.Collator(layout, 0, seq_len, batch, static=True, bucket=bucket, chunk=chunk)
    return [collate(split.ids[i : i + batch], split.labels[i : i + batch]) for i in range(0, len(split), batch)]


def attention_kernel_ms(prof, steps) -> tuple[float, list]:
    """Device time per step of the fused attention kernels in a finished profile, and their names
    (a kernel named as a CPU event, Inductor's wrapper of a Triton launch, is not one of them)."""
    times, cpu = trace_times(prof)
    hits = {k: us for k, us in times.items() if k not in cpu and ATTENTION_KERNEL.search(k)}
    return sum(hits.values()) / 1000 / steps, sorted({k[:80] for k in hits})


def measure_step(variant, model, seq_len, batch, tokens, lengths, steps, device, step_mode="auto") -> dict:
    """One fresh model: warm every batch shape, time ``steps`` steps (events), profile PROFILE_STEPS more.

    tokens: the sweep's tokens per batch (sets packed buckets; None: the training loop's buckets).
    Float32 matmuls (FAVOR+'s w.x) run as TF32 on a GPU, as they do in training (``float32_matmuls``)."""
    device = torch.device(device)
    precision = "bf16" if device.type == "cuda" else "fp32"
    with float32_matmuls(precision, device):
        row = _measure_step(variant, model, seq_len, batch, tokens, lengths, steps, device, step_mode, precision)
        return row | {"float32_matmuls": "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"}


def _measure_step(variant, model, seq_len, batch, tokens, lengths, steps, device, step_mode, precision) -> dict:
    mode = resolve_step_mode(step_mode, device, warn=False)
    layout = RunConfig(variant=variant).resolved_layout()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()  # before warm-up: the peak includes the CUDA graphs' pools
    net = build_model(model_config(model, seq_len), variant, num_labels=2).to(device)
    parts = assemble(net, device, lr=5e-5, weight_decay=0.01, step_mode=mode, precision=precision, schedule="constant")
    opt, step = parts.optimizer, parts.step  # AdamW's default decay, fused on a GPU; a constant rate
    data = [
        P.to_device(b, device)
        for b in make_batches(seq_len, batch, lengths, layout, tokens, chunk=P.chunk_for(variant, layout, seq_len))
    ]
    shapes = {tuple(b["input_ids"].shape) for b in data}
    seen: dict = {}
    t0 = time.perf_counter()
    i = 0
    while mode != "eager" and min(seen.get(s, 0) for s in shapes) < WARMUP_CALLS:  # compile and record
        shape = tuple(data[i % len(data)]["input_ids"].shape)
        seen[shape] = seen.get(shape, 0) + 1
        step(data[i % len(data)])
        i += 1
    step(data[i % len(data)])
    sync(device)
    warm_s = time.perf_counter() - t0
    marks = []
    for j in range(steps):
        marks.append(mark(device))
        step(data[(i + 1 + j) % len(data)])
    marks.append(mark(device))
    walls = elapsed_ms(marks, device)  # one per step, start to start
    prof = start_profiler(device)
    for j in range(PROFILE_STEPS):
        step(data[j % len(data)])
    sync(device)
    busy = stop_profiler(prof, PROFILE_STEPS)
    attn_ms, attn_kernels = attention_kernel_ms(prof, PROFILE_STEPS) if cuda else (None, [])
    real = sum(P.real_tokens(b) for b in data) / sum(P.slot_tokens(b) for b in data)
    out = {
        "step_mode": mode,
        "layout": layout,
        "batch_shapes": len(shapes),
        "warmup_s": warm_s,
        "step_time_ms_median": statistics.median(walls),
        "gpu_busy_ms_per_step": busy["gpu_busy_ms_per_step"],
        "attention_ms_per_step": attn_ms,
        "attention_kernels": attn_kernels,
        "top_gpu_ops": busy["top_gpu_ops"],
        "padding_fraction": 1 - real,
        **memory_breakdown(net, opt),
    }
    out["peak_memory_mb"] = torch.cuda.max_memory_allocated() / MB if cuda else None
    out["peak_reserved_mb"] = torch.cuda.max_memory_reserved() / MB if cuda else None
    return out


def free(device):
    """Forget compiled graphs and cached blocks between models (and after an out-of-memory)."""
    reset_compiler()
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
