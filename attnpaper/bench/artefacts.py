"""The paper's memory column put to the test: four variants run one after another in one process.

The paper's peaks rise by about 520 MB from each variant to the next in the order it ran them
(baseline, flash, linear, hybrid), which is what a notebook that keeps every run's model, gradients
and optimizer alive, and never resets the peak counter, would report. ``kept`` does exactly that
(eager steps, as the paper's Trainer ran; gradients zeroed in place, not freed, as zero_grad did
before PyTorch 2.0); ``fresh`` runs each variant in a process of its own. Both at DistilBERT-base's
shape (random init), on batches of IMDb's lengths, so the rows compare the two ways of measuring.
The cases (memory_cases.py) then ask what a run must leave alive for the peak to step as the paper's
does: nothing, the model, the model and its gradients, or those and AdamW's state, a process each.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import torch

from ..variants import PAPER_ORDER

ARMS = ("kept", "fresh")


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
    from .memory_cases import train_one

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    kept, rows, before = [], [], 0.0
    for i, v in enumerate(variants):
        net, opt, data = train_one(v, model, max_length, batch_size, steps, lengths, device)
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


def _checked(variants, arms, cases, model, max_length, batch_size, steps, data, out):
    """Every argument checked before any work (one ValueError each); returns them cleaned, with the
    lengths source found and ``cases`` in the order CASES gives them (each once)."""
    from .memory_cases import CASES
    from .model import model_config
    from .scaling import check_count, check_names
    from .step import check_lengths, check_lengths_source, check_out_file, model_positions

    variants, arms = check_names(list(variants), PAPER_ORDER, "variant(s)"), check_names(list(arms), ARMS, "arm(s)")
    cases = list(cases)
    if cases:
        check_names(cases, CASES, "case(s)")
    for name, value in (("steps", steps), ("batch size", batch_size), ("max_length", max_length)):
        check_count(value, name)
    out = check_out_file(out)
    model_config(model, max_length)  # a model that is not a random-init alias fails here
    check_lengths([max_length], model_positions(model), "--max-length")
    data = data or _default_source()
    check_lengths_source(data)
    return variants, arms, [c for c in CASES if c in cases], data, out


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
    cases=None,
) -> dict:
    """Both arms and the cases (memory_cases.CASES by default; each a process of its own): fresh first and
    the cases next (so each child has the GPU to itself), then kept in this process. The report names the
    commit; ``rows`` holds the arms' rows, as before, and ``cases`` (memory_cases.summarise) the cases'."""
    from ..experiment.records import git_sha
    from ..files import write_atomic
    from ..training.measure import device_info
    from . import memory_cases as M

    cases = M.CASES if cases is None else cases
    variants, arms, cases, data, out = _checked(variants, arms, cases, model, max_length, batch_size, steps, data, out)
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

    def argv_of(*child):  # a child process: the same settings, one variant (--one) or one case (--in-case)
        return [sys.executable, "-m", "attnpaper", "paper-memory", *child, "--model", model] + [
            *("--max-length", str(max_length), "--batch-size", str(batch_size), "--steps", str(steps)),
            *("--data", str(data), "--variants", *variants),
        ]

    if "fresh" in arms:
        report["rows"] += [r | {"arm": "fresh"} for r in run_fresh(variants, lambda v: argv_of("--one", v), log)]
        save()
    if cases:
        by_case = {}
        for case in cases:  # saved after each, so an interrupt keeps the cases finished before it
            by_case |= M.run_cases([case], lambda c: argv_of("--in-case", c), log)
            report |= M.summarise(by_case)
            save()
        log(f"cases: {report['verdict']}")
    if "kept" in arms:
        for r in run_kept(variants, model, max_length, batch_size, steps, lengths):
            report["rows"].append(r | {"arm": "kept"})
            log(f"kept  {r['variant']:9s} peak {_mb(r['peak_memory_mb'])}  growth {_mb(r['growth_mb'])}")
            save()
    return report
