"""Check step_mode=whole on a GPU beside eager and captured, one fresh model per (model, variant, mode).

For each it prints: wall ms/step (time.perf_counter over --steps synced steps after warm-up), GPU
busy ms/step (torch.profiler, device kernels summed as attnpaper.training.measure.stop_profiler
does), compile+record seconds (the warm-up calls minus that many steady steps), peak memory, and
the largest |loss - eager loss| over the first 20 steps (same initial weights, batches and
schedule; dropout is --dropout, 0 by default so the losses are comparable step by step).

    python scripts/whole_step_check.py                      # MiniLM shape and DistilBERT, sdpa/flash/linear
    python scripts/whole_step_check.py --models minilm --variants sdpa --steps 100
    python scripts/whole_step_check.py --cpu-dry-run        # tiny models on a CPU: eager and whole uncaptured

Each variant gets its own batch layout (flash, linear, hybrid: packed; see attnpaper.variants).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time

import torch
from transformers import BertConfig, DistilBertConfig
from transformers.utils import logging

import attnpaper
from attnpaper import variants as V
from attnpaper.experiment.records import git_sha
from attnpaper.training.assemble import assemble
from attnpaper.training.batches import Collator, chunk_for, to_device
from attnpaper.training.graph import UNCAPTURED_CALLS
from attnpaper.training.measure import device_info, start_profiler, stop_profiler
from attnpaper.training.step import reset_compiler

LOSS_STEPS = 20  # losses compared with eager's
WARM_CALLS = UNCAPTURED_CALLS + 1  # calls per batch shape before a step replays (captured: the same count)


def configs(dry, dropout):
    if dry:
        return {
            "minilm": BertConfig(
                vocab_size=1000,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
                max_position_embeddings=64,
                hidden_dropout_prob=dropout,
                attention_probs_dropout_prob=dropout,
            ),
            "distilbert": DistilBertConfig(
                vocab_size=1000,
                dim=32,
                n_layers=2,
                n_heads=4,
                hidden_dim=64,
                max_position_embeddings=64,
                dropout=dropout,
                attention_dropout=dropout,
            ),
        }
    return {
        "minilm": BertConfig(
            hidden_size=384,
            num_hidden_layers=6,
            num_attention_heads=12,
            intermediate_size=1536,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
        ),
        "distilbert": DistilBertConfig(dropout=dropout, attention_dropout=dropout),
    }


def make_batches(vocab, length, batch_size, layout, chunk, n=16, seed=0):
    """n static batches of random reviews: 90% fill all ``length`` tokens (IMDb at 128), the rest are shorter.
    The label is the parity of the first word, so the loss falls and a wrong update shows."""
    g = torch.Generator().manual_seed(seed)
    collate = Collator(layout, 0, length, batch_size, static=True, chunk=chunk)
    low = 1000 if vocab > 2000 else 200  # past BERT's special and unused ids
    out = []
    for _ in range(n):
        seqs = []
        for _ in range(batch_size):
            full = torch.rand((), generator=g) < 0.9
            n_tok = length if full else int(torch.randint(8, length, (), generator=g))
            seqs.append([101] + torch.randint(low, vocab, (n_tok - 2,), generator=g).tolist() + [102])
        out.append(collate(seqs, [s[1] % 2 for s in seqs]))
    return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def free(device):
    reset_compiler()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(config, variant, mode, data, device, steps, profile_steps, dry):
    """One fresh model through warm-up, timed steps and profiled steps; returns the row and its first losses."""
    free(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    model = attnpaper.build_model(config, variant, num_labels=2).to(device).train()
    kw = {"backend": None, "graph": False} if dry and mode == "whole" else {}  # a CPU: uncaptured, uncompiled
    precision = "bf16" if device.type == "cuda" else "fp32"
    # warm-up over the first 10 steps (ceil(0.001 x 10,000)), then a slow decay: the compared losses see real updates
    parts = assemble(
        model,
        device,
        lr=5e-4,
        weight_decay=0.01,
        step_mode=mode,
        precision=precision,
        fused=True,
        schedule="linear",
        warmup_ratio=0.001,
        total=10_000,
        max_grad_norm=1.0,
        **kw,
    )
    opt, step = parts.optimizer, parts.step
    batches = [to_device(b, device) for b in data] if device.type == "cuda" else data
    shapes = {tuple(b["input_ids"].shape) for b in batches}
    calls = {s: 0 for s in shapes}
    losses, i = [], 0
    sync(device)
    t0 = time.perf_counter()
    while len(losses) < LOSS_STEPS or (mode != "eager" and min(calls.values()) < WARM_CALLS):
        b = batches[i % len(batches)]
        calls[tuple(b["input_ids"].shape)] += 1
        loss = step(b)
        if len(losses) < LOSS_STEPS:
            losses.append(loss.float().clone())
        i += 1
    sync(device)
    warm_s, warm_calls = time.perf_counter() - t0, i
    t0 = time.perf_counter()
    for j in range(steps):
        step(batches[(i + j) % len(batches)])
    sync(device)
    wall_ms = (time.perf_counter() - t0) * 1000 / steps
    i += steps
    prof = start_profiler(device)
    for j in range(profile_steps):
        step(batches[(i + j) % len(batches)])
    sync(device)
    busy = stop_profiler(prof, profile_steps)["gpu_busy_ms_per_step"]
    row = {
        "variant": variant,
        "mode": step.mode,
        "wall_ms": wall_ms,
        "busy_ms": busy if device.type == "cuda" else None,
        "compile_record_s": max(0.0, warm_s - warm_calls * wall_ms / 1000),
        "shapes": len(shapes),
        "graphs": step.whole.graphs if step.whole is not None else None,
        "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "loss_first": float(losses[0]),
        "loss_last": float(losses[-1]),
    }
    if device.type == "cuda":
        row["nonfinite"] = bool(step.nonfinite) if step.whole is not None else None
    del step, model, opt
    return row, torch.stack(losses)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="minilm,distilbert", help="comma-separated: minilm, distilbert")
    ap.add_argument(
        "--variants", default="sdpa,flash,linear", help=f"comma-separated of {', '.join(attnpaper.VARIANTS)}"
    )
    ap.add_argument("--modes", default="eager,captured,whole", help="comma-separated step modes; eager comes first")
    ap.add_argument("--steps", type=int, default=200, help="timed steps per run")
    ap.add_argument("--profile-steps", type=int, default=30)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--out", help="also write the rows as JSON here")
    ap.add_argument("--cpu-dry-run", action="store_true", help="tiny models on a CPU, uncaptured, in seconds")
    args = ap.parse_args(argv)
    logging.set_verbosity_error()
    dry = args.cpu_dry_run
    models, variants = args.models.split(","), args.variants.split(",")
    modes = args.modes.split(",")
    for name, valid, what in [
        (models, ("minilm", "distilbert"), "model"),
        (variants, attnpaper.VARIANTS, "variant"),
        (modes, ("eager", "compiled", "captured", "whole"), "mode"),
    ]:
        bad = [x for x in name if x not in valid]
        if bad:
            ap.error(f"unknown {what} {bad[0]!r}; valid: {', '.join(valid)}")
    if "eager" not in modes:
        modes = ["eager"] + modes  # the reference for the loss differences
    device = torch.device("cpu" if dry else "cuda")
    if not dry and not torch.cuda.is_available():
        ap.error("no CUDA GPU here; use --cpu-dry-run to rehearse on a CPU")
    if dry:  # seconds: tiny models, short batches, few steps, nothing compiled (captured and compiled left out)
        args.length, args.batch_size, args.steps, args.profile_steps = 16, 4, 5, 2
        modes = [m for m in modes if m in ("eager", "whole")]
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
    print(
        f"# device {torch.cuda.get_device_name() if not dry else 'cpu (dry run)'}, torch {torch.__version__}, "
        f"batch {args.batch_size} x {args.length} tokens, dropout {args.dropout}, {args.steps} timed steps"
    )
    print(
        f"{'model':10s} {'variant':9s} {'mode':9s} {'wall ms':>8s} {'busy ms':>8s} {'wall/busy':>9s} "
        f"{'compile s':>9s} {'peak MB':>8s} {'max|dloss|':>10s} {'loss 1->20':>13s} shapes graphs"
    )
    rows = []
    run_info = {
        "git_sha": git_sha(),
        "device": device_info()["device"],
        "batch_size": args.batch_size,
        "max_length": args.length,
    }  # on every row, as every result file of the project
    for name in models:
        config = configs(dry, args.dropout)[name]
        for variant in variants:
            layout = V.variant(variant).layout  # as the runs lay out their batches
            chunk = chunk_for(variant, layout, args.length)
            data = make_batches(config.vocab_size, args.length, args.batch_size, layout, chunk)
            ref = None
            for mode in modes:
                row, losses = measure(config, variant, mode, data, device, args.steps, args.profile_steps, dry)
                ref = losses if mode == "eager" else ref
                row.update(model=name, max_abs_loss_diff=float((losses - ref).abs().max()), step_mode=mode, **run_info)
                rows.append(row)
                busy = row["busy_ms"]
                print(
                    f"{name:10s} {variant:9s} {row['mode']:9s} {row['wall_ms']:8.2f} "
                    f"{busy if busy is not None else float('nan'):8.2f} "
                    f"{row['wall_ms'] / busy if busy else float('nan'):9.2f} {row['compile_record_s']:9.1f} "
                    f"{row['peak_mb'] if row['peak_mb'] is not None else float('nan'):8.0f} "
                    f"{row['max_abs_loss_diff']:10.2e} {row['loss_first']:6.3f}->{row['loss_last']:6.3f} "
                    f"{row['shapes']:6d} {row['graphs'] if row['graphs'] is not None else '-':>6}",
                    flush=True,
                )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)
