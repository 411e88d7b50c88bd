"""The reference rows: transformers' own classifier with no attnpaper code, as a user gets it by default.

Its default attention (sdpa), batches padded to ``max_length`` (static shapes), fused AdamW outside the
model, bf16 autocast; either plain eager or ``torch.compile(mode="reduce-overhead")`` (Inductor and
CUDA graphs). Timed with the same ``Meter`` as the variants' steps, so the rows stand side by side.
"""

from __future__ import annotations

import torch

from ..model.build import resolve_model
from ..training.assemble import assemble
from ..training.batches import Collator
from ..training.measure import Meter
from ..training.step import autocast

STOCK = "transformers"
"""The variant name of the reference rows (step modes: eager, reduce-overhead)."""
STOCK_MODES = {"eager": None, "reduce-overhead": "reduce-overhead"}


def stock_model(model: str):
    """transformers' AutoModelForSequenceClassification for ``model`` (an alias, directory or hub name)."""
    from transformers import AutoModelForSequenceClassification

    source = resolve_model(model)
    torch.manual_seed(0)
    if isinstance(source, str):
        return AutoModelForSequenceClassification.from_pretrained(source, num_labels=2, dtype=torch.float32)
    source = source.__class__.from_dict(source.to_dict() | {"num_labels": 2})
    return AutoModelForSequenceClassification.from_config(source)


def padded_batches(split, batch_size: int, length: int) -> list[dict]:
    """Static [batch, length] batches with a padding mask (pad id 0): the padded Collator's, whole batches only."""
    collate = Collator("padded", 0, length, batch_size, static=True)
    return [
        collate([seq[:length] for seq in split.ids[i : i + batch_size]], split.labels[i : i + batch_size])
        for i in range(0, len(split) - batch_size + 1, batch_size)
    ]


def measure_stock(
    model: str, mode: str, split, steps: int, batch_size: int, length: int, profile_steps: int = 5
) -> dict:
    """Wall and GPU-busy ms per step and peak memory of the stock model's training step (eager runs on a CPU
    too, for tests; reduce-overhead needs a GPU)."""
    if mode not in STOCK_MODES:
        raise ValueError(f"unknown reference mode {mode!r}; valid: {', '.join(STOCK_MODES)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if STOCK_MODES[mode] and device.type != "cuda":
        raise ValueError(f"reference mode {mode!r} records CUDA graphs and needs a GPU; valid here: eager")
    meter = Meter(device, "captured" if STOCK_MODES[mode] else "eager", steps, timed=True, profile_steps=profile_steps)
    model_ = stock_model(model).to(device).train()
    # AdamW with PyTorch's default decay, fused; the step below is transformers' stock one, not TrainStep
    optimizer = assemble(model_, device, lr=5e-5, weight_decay=0.01, fused=True, schedule=None).optimizer
    fwd = torch.compile(model_, mode=STOCK_MODES[mode]) if STOCK_MODES[mode] else model_
    batches = [{k: v.to(device) for k, v in b.items()} for b in padded_batches(split, batch_size, length)]
    meter.start()
    for i in range(steps):
        b = batches[i % len(batches)]
        with meter.step(i, tuple(b["input_ids"].shape)):
            if STOCK_MODES[mode]:
                torch.compiler.cudagraph_mark_step_begin()
            with autocast("bf16" if device.type == "cuda" else "fp32", device):
                loss = fwd(**b).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    out = meter.report(steps, 0.0, model_, optimizer)
    busy = out.get("gpu_busy_ms_per_step")
    real = sum(min(len(x), length) for x in split.ids[: len(batches) * batch_size])
    out.update(
        step_mode=mode,
        layout="padded",
        padding_fraction=1 - real / (len(batches) * batch_size * length),
        kernels=None,
        wall_over_busy=out["step_time_ms_median"] / busy if busy else None,
    )
    del model_, optimizer, fwd, batches
    torch._dynamo.reset()
    return out
