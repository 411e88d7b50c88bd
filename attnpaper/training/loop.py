"""The training loop: fine-tune one variant and measure it (accuracy, wall time, peak memory, throughput).

``train`` reads in one sitting, as nanoGPT's loop does: build, then for each batch redraw features,
step, keep a loss every 50 steps, check for non-finite losses, checkpoint when due. What it measures
(and the record it returns) lives in ``measure.Meter``, its optimizer, schedule and step are built by
``assemble``, what it saves in ``checkpoint.Checkpoint``, its data order in ``loader``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys

import torch
from tqdm.auto import tqdm

from ..attention import LayerAttention
from ..attention.exact import has_bf16, kernel_set
from ..model.build import build_model, kernel_fallbacks, kernels_used, resolve_model
from ..model.families import family_of
from . import batches as P
from . import data as D
from . import ddp, exclusive
from .assemble import assemble_run
from .checkpoint import fresh_progress, plan_digest
from .clock import Clock
from .config import TOKENIZER_ENV, RunConfig
from .loader import loader, step_plan
from .measure import Meter
from .step import TrainStep, autocast, resolve_step_mode

STRICT_ENV = "ATTNPAPER_STRICT_KERNELS"
"""Set to 1: a flash run that would fall back from the fused varlen kernel fails instead (see ``train``)."""


EVAL_BUCKET = 16
"""Padded evaluation batches are padded to a multiple of this many tokens (8 shapes at 128 tokens)."""


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
    """The precision asked for; auto is bf16 on a GPU with native bf16 (sm80+), fp16 (and so a gradient
    scaler) on an older GPU such as the paper's T4, fp32 on a CPU."""
    if cfg.precision != "auto":
        return cfg.precision
    if device.type != "cuda":
        return "fp32"
    return "bf16" if has_bf16(device) else "fp16"


def evaluate(model, split, cfg, device, precision, pad_id) -> float:
    """Accuracy over the whole split (sorted by length, so batches carry little padding; eager).

    Data-parallel: each rank scores every world-th review and the counts are summed."""
    correct = torch.zeros((), dtype=torch.long, device=device)
    for b, logits in eval_batches(model, split, cfg, device, precision, pad_id):
        correct += (logits.argmax(-1) == b["labels"]).sum()  # dummy rows' label -100 never matches
    return ddp.all_sum(correct).item() / len(split)


def eval_batches(model, split, cfg, device, precision, pad_id):
    """(batch on the device, logits) for this rank's share of the split, in ``evaluate``'s order and shapes
    (model in eval mode, no grad, autocast while it runs; scripts/eval_check.py reads the logits themselves)."""
    model.eval()
    rank, size, _ = ddp.world()
    order = sorted(range(len(split)), key=lambda i: len(split.ids[i]))[rank::size]
    plan = [order[i : i + cfg.eval_batch_size] for i in range(0, len(order), cfg.eval_batch_size)]
    layout = cfg.resolved_layout()
    if layout == "padded":  # lengths rounded up to EVAL_BUCKET: a few shapes, not one per length (cuDNN
        # attention plans each new shape, tens of ms apiece); the last batch gets dummy rows (label -100).
        # Where the padding is attended (flash_backend nomask) it is part of the input: max_length, as in training
        bucket = cfg.max_length if cfg.pads_to_max_length() else min(EVAL_BUCKET, cfg.max_length)
        collate = P.Collator(layout, pad_id, cfg.max_length, cfg.eval_batch_size, static=True, bucket=bucket)
    else:
        collate = P.Collator(layout, pad_id, cfg.max_length, chunk=P.chunk_for(cfg.variant, layout, cfg.max_length))
    with torch.no_grad(), autocast(precision, device):
        # collated by the loader's worker processes, as in training. aa0f586 collated here instead (on one CPU
        # core all 25,000 reviews take 0.08-0.14 s, against 0.6-0.7 s through two workers), and its runs on an
        # H100 evaluated more slowly (linear 5.1-5.3 s against 3.4-3.6 s, flash 2.1-2.8 s against 1.3-1.6 s:
        # results/issue38/h100-aa0f586); but they also shared one kernel, so which change cost the time is
        # not known. This is the collation measured faster, until a GPU call tells the two apart
        for b in tqdm(loader(split, plan, collate, device), desc="eval", total=len(plan), mininterval=5):
            b = P.to_device({k: v for k, v in b.items() if not k.startswith("_")}, device)
            yield b, P.forward(model, b, labels=False)[1]


def train(
    cfg: RunConfig,
    device=None,
    splits=None,
    progress=True,
    profile_steps=0,
    checkpoint=None,
    strict_kernels=None,
    clock=None,
) -> dict:
    """Fine-tune one variant and measure it. Returns the record's measurements (see experiment/records.py).

    The step is whole, captured or eager (``cfg.step_mode``; see training/step.py). ``cfg.max_steps``
    (benchmarks) times every step with CUDA events; ``profile_steps`` profiles the last steps for the
    GPU's busy time. ``checkpoint`` (a Checkpoint) saves when due and resumes a saved run. This
    function owns the process's global random stream (seeded with ``cfg.seed``, for dropout) and
    float32 matmul precision (TF32 under bf16/fp16 autocast) while it runs; both are restored after.
    Raises NonFiniteLoss (with the step) if the loss stops being finite. A flash layer that falls back
    from the fused varlen kernel on a GPU is named on stderr and in the record (``flash_fallback``);
    ``strict_kernels`` (default: $ATTNPAPER_STRICT_KERNELS=1) makes it a ValueError before the first step.
    ``clock`` (a clock.Clock) is charged the data, model, compile, steps, evaluation and saving parts.
    The run holds its device alone throughout (training/exclusive.py): the wait is the part "waiting".
    """
    own, (device, rank, world) = clock is None, join_world(cfg, device)
    clock = clock or Clock()
    clock.watch(device)  # GPU-busy seconds by part, where NVML can say; the caller's stop() ends it
    try:
        with exclusive.hold(device, clock), kernel_set(cfg.kernel_set, device):  # sm75: a T4's kernels, no bf16
            return _train(cfg, device, rank, world, splits, progress, profile_steps, checkpoint, strict_kernels, clock)
    finally:
        if own:  # no caller to stop it (benchmarks): end the sampling here
            clock.stop()


def _train(cfg, device, rank, world, splits, progress, profile_steps, checkpoint, strict_kernels, clock) -> dict:
    """``train``'s loop, on this rank's device, held."""
    precision, step_mode = precision_of(cfg, device), resolve_step_mode(cfg.step_mode, device)
    model, splits, pad_id = prepare(cfg, splits, clock)
    clock.mark()  # from here to the first step: model moved, optimizer and step built, kernels probed
    clock.now("model")
    train_split = splits["train"]
    steps_per_epoch = math.ceil(len(train_split) / cfg.batch_size)
    total = min(math.ceil(cfg.epochs * steps_per_epoch), cfg.max_steps or math.inf)
    meter = Meter(device, step_mode, total, timed=cfg.max_steps is not None, profile_steps=profile_steps)
    model.to(device)
    collate = train_collator(cfg, pad_id, world)
    plan = step_plan(len(train_split), cfg.batch_size, total, torch.Generator().manual_seed(cfg.seed))
    # a whole step over several shapes compiles once for all (dynamic); other modes compile per shape or not at all
    shapes = len(planned_shapes(plan, train_split, collate, rank, world)) if step_mode == "whole" else 1
    parts = assemble_run(model, device, cfg, step_mode, precision, total, world, shapes=shapes)
    step_fn: TrainStep = parts.step
    layers = [m for m in model.modules() if isinstance(m, LayerAttention)]
    state = (plan_digest(plan), model, parts.optimizer, parts.scheduler, parts.scaler, [m.generator for m in layers])

    cuda_rng = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_rng), float32_matmuls(precision, device):
        torch.manual_seed(cfg.seed)
        probe_kernels(model, collate, train_split, device, precision)
        report_fallbacks(model, cfg, os.environ.get(STRICT_ENV) == "1" if strict_kernels is None else strict_kernels)
        model.train()
        run = checkpoint.restore(*state) if checkpoint else fresh_progress()
        resumed_from, before_s = run["step"], run["train_time_s"]
        whole_flag = step_fn.nonfinite  # whole mode: the graph sets it, no kernel of ours per step
        bad = whole_flag if whole_flag is not None else torch.zeros((), dtype=torch.bool, device=device)
        bar = tqdm(total=total, initial=resumed_from, desc=f"train {cfg.variant}", mininterval=10, disable=not progress)
        clock.lap("model")
        clock.now("training")  # compile and steps: the Meter tells them apart afterwards
        meter.start()
        for b in loader(train_split, [ddp.shard(rows, rank, world) for rows in plan[resumed_from:]], collate, device):
            run["real_tokens"] += b.pop("_real")
            run["slot_tokens"] += b.pop("_slots")
            for m in layers:  # FAVOR+ redraws happen here, outside the (compiled) forward
                m.redraw_at(run["step"])
            with meter.step(run["step"], tuple(b["input_ids"].shape)):
                loss = step_fn(P.to_device(b, device))
            if whole_flag is None:
                bad |= ~torch.isfinite(loss)
            run["step"] += 1
            step = run["step"]
            if step % 50 == 0 or step == total:
                run["losses"].append(ddp.all_sum(loss.float().clone()) / world)  # read at the end: no sync here
            due = checkpoint is not None and checkpoint.due(step, steps_per_epoch)
            if step % 500 == 0 or step == total or due:  # a sync per 500 steps
                check_finite(bad, step, total, cfg, precision)
            if due and rank == 0:  # the ranks hold the same weights: one file
                with meter.paused():
                    checkpoint.store(state[0], run | {"train_time_s": before_s + meter.elapsed_s()}, *state[1:])
            bar.update(1)
        ran = what_ran(cfg, step_fn, precision, world, splits)
        out = meter.record(run, resumed_from, before_s, model, parts.optimizer, ran)
        bar.close()
        out.update(kernels=kernels_used(model), flash_fallback=kernel_fallbacks(model))
        charge_training(clock, out, before_s)
        clock.now("other")
        with clock.part("evaluation"):
            out["accuracy"] = evaluate(model, splits["test"], cfg, device, precision, pad_id) if cfg.eval else None
    return out


def join_world(cfg: RunConfig, device) -> tuple[torch.device, int, int]:
    """This process's device, rank and world size; refuses a data-parallel config not started by torchrun."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rank, world, _ = ddp.world()
    if world != cfg.nproc_per_node:
        raise ValueError(
            f"nproc_per_node={cfg.nproc_per_node} but {world} process(es) run: "
            "start data-parallel runs with run_and_record (it calls torchrun)"
        )
    return ddp.setup(device), rank, world


def prepare(cfg: RunConfig, splits=None, clock=None) -> tuple:
    """The run's model (still on the CPU), its splits (``splits``, or loaded as cfg says) and the pad id;
    ``clock`` is charged the tokenizer and model as "model", the splits as "data"."""
    clock = clock or Clock()
    with clock.part("model"):
        tokenizer = load_tokenizer(cfg.model)
        model = build_model(cfg.model, cfg.variant, num_labels=2, **cfg.model_options())
    cfg.validate(family_of(model.config).max_length(model.config), model.config.num_hidden_layers)
    with clock.part("data"):
        splits = splits or D.load_splits(cfg.data, tokenizer, cfg.max_length, cfg.train_samples, cfg.test_samples)
    return model, splits, tokenizer.pad_token_id or 0


def charge_training(clock: Clock, out: dict, before_s: float) -> None:
    """Charge the Meter's training time of this process to ``clock``: compile and graph recording, steps
    (less the ``before_s`` of a resumed run's earlier process), checkpoint writes as "saving"."""
    clock.add("compile", out["compile_time_s"])
    clock.add("steps", out["train_time_excl_compile_s"] - before_s)
    clock.add("saving", out["checkpoint_time_s"])
    if "profile_time_s" in out:  # a benchmark's profiled steps: the trace's processing after them
        clock.add("profile", out["profile_time_s"])


def train_collator(cfg: RunConfig, pad_id: int, world: int) -> P.Collator:
    """This rank's training batches: static shapes in every step mode (eager and captured see the same
    batches), the layout, token buckets and chunks cfg says; padding='dynamic' (eager steps only): each
    batch padded to its own longest review, as transformers' DataCollatorWithPadding."""
    layout = cfg.resolved_layout()
    chunk = P.chunk_for(cfg.variant, layout, cfg.max_length)
    static = cfg.padding == "static"
    return P.Collator(
        layout, pad_id, cfg.max_length, cfg.batch_size // world, static=static, bucket=cfg.bucket, chunk=chunk
    )


def planned_shapes(plan, split, collate: P.Collator, rank: int, world: int) -> set:
    """The batch shapes this rank's steps will take (from the lengths alone: no batch is built)."""
    return {collate.shape([len(split.ids[i]) for i in ddp.shard(rows, rank, world)]) for rows in plan}


def check_finite(bad, step: int, total: int, cfg: RunConfig, precision: str) -> None:
    """Raise NonFiniteLoss if any rank's flag says a loss was not finite (one sync: the flag's read)."""
    if ddp.all_sum(bad.int()).item():
        raise NonFiniteLoss(
            f"non-finite loss by step {step} of {total} (variant {cfg.variant}, lr {cfg.lr}, precision {precision})"
        )


def what_ran(cfg: RunConfig, step_fn: TrainStep, precision: str, world: int, splits: dict) -> dict:
    """The record's account of what ran: precision, the step mode run and asked for, layout, ranks, samples."""
    return {
        "precision": precision,
        "step_mode": step_fn.mode,
        "step_mode_requested": cfg.step_mode,
        "layout": cfg.resolved_layout(),
        "compiled_dynamic": step_fn.dynamic,  # whole step over several batch shapes: one compile for all
        "world_size": world,
        "train_samples": len(splits["train"]),
        "test_samples": len(splits["test"]) if cfg.eval else 0,
    }


@contextlib.contextmanager
def float32_matmuls(precision, device):
    """TF32 for the float32 matmuls left outside autocast (FAVOR+ w.x) under bf16/fp16; restored after."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = before or (device.type == "cuda" and precision != "fp32")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def report_fallbacks(model, cfg, strict: bool) -> None:
    """After the probe: name the kernels flash layers fell back to in one line on stderr, or refuse them."""
    fallbacks = kernel_fallbacks(model)
    if not fallbacks:
        return
    what = f"{cfg.variant}'s exact layers run {'; '.join(fallbacks)} (no fused varlen kernel here)"
    if strict:
        raise ValueError(
            f"strict kernels: {what}; valid: a GPU of compute capability >= 8.0 with bf16/fp16 and "
            f"flash_backend auto or varlen, or {STRICT_ENV} unset"
        )
    print(f"note: {what}; the record's flash_fallback says so", file=sys.stderr, flush=True)


def probe_kernels(model, collate, split, device, precision):
    """One eager forward (no grad, eval mode, so no dropout draws) on a first batch: records the kernels.

    A compiled step does not record them itself (the model's kernel sets would change under the
    compiler's guards); its graphs were traced through the same dispatch, so they run the same kernels.
    """
    model.eval()
    n = min(len(split), collate.batch_size)
    with torch.no_grad(), autocast(precision, device):
        P.forward(model, P.to_device(collate(split.ids[:n], split.labels[:n]), device), labels=False)
