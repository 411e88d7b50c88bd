"""The paper's memory column put to the test: four variants run one after another in one process.

The paper's peaks rise by about 520 MB from each variant to the next in the order it ran them
(baseline, flash, linear, hybrid), which is what a notebook that keeps every run's model, gradients
and optimizer alive, and never resets the peak counter, would report. ``kept`` does exactly that
(eager steps, as the paper's Trainer ran; gradients zeroed in place, not freed, as zero_grad did
before PyTorch 2.0); ``fresh`` runs each variant in a process of its own. Both at DistilBERT-base's
shape (random init), on batches of IMDb's lengths, so the rows compare the two ways of measuring.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import torch

from ..variants import PAPER_ORDER

ARMS = ("kept", "fresh")


def _train_kept(variant, model, max_length, batch_size, steps, lengths, device) -> tuple:
    """``steps`` eager AdamW steps of one fresh model; returns what a notebook would keep alive."""
    from ..model.build import build_model
    from ..training import batches as P
    from ..training.assemble import assemble
    from ..training.config import RunConfig
    from ..training.step import autocast
    from .model import make_batches, model_config

    layout = RunConfig(variant=variant).resolved_layout()
    net = build_model(model_config(model, max_length), variant, num_labels=2).to(device)
    opt = assemble(net, device, lr=5e-5, weight_decay=0.01, fused=None, schedule=None).optimizer  # Trainer's: not fused
    chunk = P.chunk_for(variant, layout, max_length)
    data = [P.to_device(b, device) for b in make_batches(max_length, batch_size, lengths, layout, None, chunk=chunk)]
    net.train()
    for i in range(steps):
        with autocast("bf16" if device.type == "cuda" else "fp32", device):
            loss = P.forward(net, data[i % len(data)])[0]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)  # the gradients stay allocated, as a kept Trainer's do
    return net, opt, data


def _default_source():
    from ..training.data import default_source

    return default_source()


def imdb_lengths_for(data, max_length):
    """IMDb's review lengths cut at max_length, from ``data`` (default: $ATTNPAPER_IMDB or the hub)."""
    from .step import imdb_lengths

    return imdb_lengths(data or _default_source(), max_length)


def run_kept(variants, model, max_length, batch_size, steps, lengths, device=None) -> list[dict]:
    """The variants in order in this process, each one's model, gradients, optimizer and batches kept;
    the peak counter is reset once, before the first, and read after each."""
    from ..training.measure import MB, memory_breakdown

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    kept, rows, before = [], [], 0.0
    for i, v in enumerate(variants):
        net, opt, data = _train_kept(v, model, max_length, batch_size, steps, lengths, device)
        kept.append((net, opt, data))
        peak = torch.cuda.max_memory_allocated() / MB if cuda else None
        rows.append(
            {
                "variant": v,
                "position": i + 1,
                "peak_memory_mb": peak,
                "growth_mb": None if peak is None else peak - before,
                "allocated_after_mb": torch.cuda.memory_allocated() / MB if cuda else None,
                **memory_breakdown(net, opt),
            }
        )
        before = peak or 0.0
    return rows


def _mb(x) -> str:
    return "   (no CUDA)" if x is None else f"{x:8.0f} MB"


def run_fresh(variants, argv_of, log=print) -> list[dict]:
    """Each variant in a process of its own (``argv_of(variant)``: a command printing one JSON row last)."""
    rows = []
    for i, v in enumerate(variants):
        done = subprocess.run(argv_of(v), capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"the fresh process of {v} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row | {"position": i + 1, "growth_mb": None})
        log(f"fresh {v:9s} peak {_mb(row['peak_memory_mb'])}")
    return rows


def paper_memory(
    variants=PAPER_ORDER,
    model="distilbert-base-random",
    max_length=128,
    batch_size=32,
    steps=20,
    data=None,
    out=None,
    arms=ARMS,
    log=print,
) -> dict:
    """Both arms, fresh first (so each child has the GPU to itself), then kept; the report names the commit."""
    from ..experiment.records import git_sha
    from ..files import write_atomic
    from ..training.measure import device_info
    from .scaling import check_count, check_names
    from .step import check_out_file

    variants, arms = check_names(list(variants), PAPER_ORDER, "variant(s)"), check_names(list(arms), ARMS, "arm(s)")
    for name, value in (("steps", steps), ("batch size", batch_size), ("max_length", max_length)):
        check_count(value, name)
    out = check_out_file(out)
    from .model import model_config
    from .step import check_lengths, check_lengths_source, model_positions

    model_config(model, max_length)  # a model that is not a random-init alias fails here
    check_lengths([max_length], model_positions(model), "--max-length")
    data = data or _default_source()
    check_lengths_source(data)
    lengths = imdb_lengths_for(data, max_length)
    versions = device_info()
    report = {
        "kind": "paper-memory",
        "git_sha": git_sha(),
        "versions": versions,
        "device": versions["device"],
        "step_mode": "eager",
        "precision": "bf16" if torch.cuda.is_available() else "fp32",
        "model": model,
        "max_length": max_length,
        "batch_size": batch_size,
        "steps": steps,
        "data": f"random ids of IMDb lengths ({data})",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": [],
    }

    def save():
        if out:
            write_atomic(out, json.dumps(report, indent=1, default=str))

    if "fresh" in arms:

        def argv_of(v):
            return [sys.executable, "-m", "attnpaper", "paper-memory", "--one", v, "--model", model] + [
                *("--max-length", str(max_length), "--batch-size", str(batch_size), "--steps", str(steps)),
                *("--data", str(data)),
            ]

        report["rows"] += [r | {"arm": "fresh"} for r in run_fresh(variants, argv_of, log)]
        save()
    if "kept" in arms:
        for r in run_kept(variants, model, max_length, batch_size, steps, lengths):
            report["rows"].append(r | {"arm": "kept"})
            log(f"kept  {r['variant']:9s} peak {_mb(r['peak_memory_mb'])}  growth {_mb(r['growth_mb'])}")
            save()
    return report
