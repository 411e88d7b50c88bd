"""The paper's memory step reproduced from its cause: what a notebook keeps alive from one run to the next.

The paper's peaks (``analysis.results.PAPER``) rise by a near-constant step from run to run, in the order
it ran its variants in one Colab process, read with ``torch.cuda.max_memory_allocated()`` and never reset.
A never-reset peak can only grow by what the earlier runs left allocated (plus any difference in the
runs' own peaks), so the step names what stayed alive. Four cases, each a process of its own (so one
case's leftovers cannot reach the next), each running the variants in the paper's order and keeping
from every run what it names (each case keeps what the one before it keeps, and more):

* (i)   ``nothing``:   every run's model, gradients and optimizer are dropped;
* (ii)  ``model``:     the model (its fp32 weights), gradients set to None, optimizer dropped;
* (iii) ``gradients``: the model and its gradients (zeroed in place, as zero_grad did before PyTorch 2.0);
* (iv)  ``optimizer``: the model, its gradients and AdamW's state (the ``kept`` arm, without its batches).

What is kept is held by explicit references in one list; the batches are never kept (a Trainer feeds its
batches from a DataLoader one at a time). What is not kept is freed: its references are dropped and
``gc.collect()`` runs (a notebook rebinding ``model = ...`` frees the same by reference counting, sooner
or later for objects in cycles); weak references then check that the model and optimizer of a case that
does not keep them are gone, and the case that keeps the model alone checks every ``.grad`` is None.
``torch.cuda.empty_cache()`` is not called, as a notebook that only reads the peak would not: freed blocks
stay in the caching allocator for the next run to reuse, so the reserved reading is what such a process would hold.
The peak counter is reset once, at the process's start, and never between runs.

torch is imported only to measure, so the command line reads CASES without it (--help stays fast).
"""

from __future__ import annotations

import gc
import json
import subprocess
import weakref

CASES = ("nothing", "model", "gradients", "optimizer")
LABELS = {"nothing": "(i)", "model": "(ii)", "gradients": "(iii)", "optimizer": "(iv)"}
KEEPS = {
    "nothing": "nothing",
    "model": "the model (weights)",
    "gradients": "the model and its gradients",
    "optimizer": "the model, its gradients and AdamW's state",
}
TOLERANCE = 0.02  # a case matches when its mean step is within 2% of the paper's; it is even when every step is
UNITS = {"mb": 10**6, "mib": 2**20}  # the paper says "MB" without saying which: both are read
UNIT_NAMES = {"mb": "MB", "mib": "MiB"}
PEAKS = ("allocated", "reserved")  # the counters a match is judged on (max_memory_allocated / _reserved)
HELD = "held"  # memory_allocated once a run's leftovers are dropped: what the case kept, for the record
KEPT = "kept"  # the bytes of the tensors the case keeps, counted from them (any device, a GPU not needed)
READINGS = {
    "allocated": "torch.cuda.max_memory_allocated() after each run, never reset (the paper's counter); judged",
    "reserved": "torch.cuda.max_memory_reserved() after each run, never reset (the caching allocator's); judged",
    HELD: "torch.cuda.memory_allocated() once the run's leftovers are dropped: what the case keeps, not judged",
    KEPT: "bytes of the kept tensors (weights, gradients, AdamW state), counted from them; not judged",
}
NO_GPU = "no CUDA GPU was there: the runs ran, but there is no CUDA memory to read, so every peak is null"


def paper_step(paper=None) -> dict:
    """The paper's steps between consecutive runs of its memory column, in its order, and their mean (its MB)."""
    from ..analysis.results import PAPER
    from ..variants import PAPER_ORDER

    peaks = (PAPER if paper is None else paper)["peak_memory_mb"].reindex(PAPER_ORDER)
    steps = [float(x) for x in peaks.diff().iloc[1:]]
    return {
        "order": list(PAPER_ORDER),
        "peaks_mb": [float(x) for x in peaks],
        "steps": steps,
        "mean": sum(steps) / len(steps),
    }


def _reading(values, paper_mean, tolerance) -> dict:
    """Steps of one series of per-run byte counts, in MB and MiB, their means, and the match to the paper."""
    if len(values) < 2 or any(v is None for v in values):  # no GPU (or one run): nothing to step
        return {f"{k}_{u}": None for k in ("steps", "mean", "off", "matches", "even") for u in UNITS}
    out = {}
    for unit, size in UNITS.items():
        steps = [(b - a) / size for a, b in zip(values, values[1:])]
        mean = sum(steps) / len(steps)
        off = mean / paper_mean - 1
        out |= {
            f"steps_{unit}": steps,
            f"mean_{unit}": mean,
            f"off_{unit}": off,
            f"matches_{unit}": abs(off) <= tolerance,
            f"even_{unit}": all(abs(x / paper_mean - 1) <= tolerance for x in steps),
        }
    return out


def case_steps(runs, paper_mean, tolerance=TOLERANCE) -> dict:
    """From one case's runs (in order, each with ``peak_allocated_bytes``, ``peak_reserved_bytes`` and
    ``allocated_after_bytes``, None without a GPU): per reading, the steps between consecutive runs in MB
    (10**6 bytes) and MiB (2**20), their mean, its offset from ``paper_mean`` and whether it is within
    ``tolerance``, and whether every step is (``even``: the paper's steps are, 521 to 524 MB); ``matches``,
    the peak readings whose mean matches, and ``even``, those whose every step does (None: no peaks).
    A mean can match by chance where the variants' own peaks differ (one large step, two small);
    ``even`` tells that apart.

    Two more readings, for the record, not judged: ``held`` (memory allocated after each run, once its
    leftovers are dropped) and ``kept`` (``kept_bytes``, counted from the kept tensors, so on a CPU too)
    step by what the case keeps alone; the peaks also carry the differences between the variants' own
    peaks."""
    keys = {
        "allocated": "peak_allocated_bytes",
        "reserved": "peak_reserved_bytes",
        HELD: "allocated_after_bytes",
        KEPT: "kept_bytes",
    }
    out = {name: _reading([r.get(key) for r in runs], paper_mean, tolerance) for name, key in keys.items()}
    for key in ("matches", "even"):
        flags = [(f"{p} {UNIT_NAMES[u]}", out[p][f"{key}_{u}"]) for p in PEAKS for u in UNITS]
        out[key] = None if any(m is None for _, m in flags) else [name for name, m in flags if m]
    return out


def verdict(steps_by_case: dict, paper_mean: float, tolerance=TOLERANCE, no_peaks=NO_GPU) -> dict:
    """Which cases' mean peak step is within ``tolerance`` of the paper's (name -> the readings that match),
    and one sentence saying so, or that none does, or why it cannot tell (``no_peaks``: there are no steps
    of the peaks to judge)."""
    if not steps_by_case:
        return {"matching_cases": None, "even_cases": None, "verdict": "no case was run"}
    if any(s["matches"] is None for s in steps_by_case.values()):
        return {"matching_cases": None, "even_cases": None, "verdict": f"{no_peaks}; no case can be matched"}
    found = {c: s["matches"] for c, s in steps_by_case.items() if s["matches"]}
    target = f"the paper's mean step of {paper_mean:.1f} MB (within {tolerance:.0%}, in MB or MiB)"
    if not found:
        return {"matching_cases": {}, "even_cases": {}, "verdict": f"no case matches {target}"}
    said = "; ".join(f"{LABELS[c]} {c} ({', '.join(m)})" for c, m in found.items())
    even = {c: [r for r in m if r in steps_by_case[c]["even"]] for c, m in found.items()}
    steady = "; ".join(f"{LABELS[c]} {c} ({', '.join(m)})" for c, m in even.items() if m) or "none of them"
    return {
        "matching_cases": found,
        "even_cases": {c: m for c, m in even.items() if m},
        "verdict": f"{said} match {target}; every step within it too: {steady}",
    }


def train_one(variant, model, max_length, batch_size, steps, lengths, device) -> tuple:
    """``steps`` eager AdamW steps of one fresh model; returns what a notebook would keep alive (the model,
    its gradients zeroed in place, its optimizer) and the run's batches on ``device``."""
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


def _keep(case, net, opt):
    """What ``case`` keeps of one finished run (explicit references; the caller drops its own)."""
    if case == "nothing":
        return ()
    if case == "model":
        for p in net.parameters():
            p.grad = None  # the gradients go; the weights stay
        return (net,)
    if case == "gradients":
        return (net,)  # gradients stay attached to the weights (zeroed in place after each step)
    return (net, opt)


def _kept_bytes(kept) -> int:
    """Bytes of the distinct tensors in ``kept``: weights, their gradients, AdamW's state."""
    import torch

    seen = {}
    for obj in kept:
        tensors = []
        if isinstance(obj, torch.nn.Module):
            tensors = [t for p in obj.parameters() for t in (p, p.grad) if t is not None]
        elif isinstance(obj, torch.optim.Optimizer):
            tensors = [v for s in obj.state.values() for v in s.values() if torch.is_tensor(v)]
        seen |= {t.data_ptr(): t.numel() * t.element_size() for t in tensors if t.numel()}
    return sum(seen.values())


def _check_freed(case, kept, net_ref, opt_ref) -> None:
    """Raise if anything the case does not keep survived the collection."""
    left = [name for name, ref in (("model", net_ref), ("optimizer", opt_ref)) if ref() is not None]
    wanted = {"nothing": [], "model": ["model"], "gradients": ["model"], "optimizer": ["model", "optimizer"]}[case]
    leaked = [n for n in left if n not in wanted]
    if case == "model" and any(p.grad is not None for p in kept[0].parameters()):
        leaked.append("gradients")
    if leaked:
        raise RuntimeError(f"case {case}: {', '.join(leaked)} survived a run that does not keep them")


def run_case(case, variants, model, max_length, batch_size, steps, lengths, device=None) -> list[dict]:
    """The variants in order in this process, keeping what ``case`` keeps from each; one row per run.

    Each row: the never-reset peaks (allocated, reserved) read after the run, the memory allocated and
    reserved once its leftovers are dropped, and the bytes the case now keeps in all (any device)."""
    import torch

    if case not in CASES:
        raise ValueError(f"unknown case {case}; valid: {', '.join(CASES)}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()  # once, at the process's start; never between runs
    kept, rows = [], []
    for i, v in enumerate(variants):
        net, opt, data = train_one(v, model, max_length, batch_size, steps, lengths, device)
        net_ref, opt_ref = weakref.ref(net), weakref.ref(opt)
        kept.append(_keep(case, net, opt))
        del net, opt, data  # the loop's own references: only ``kept`` holds anything now
        gc.collect()
        _check_freed(case, kept[-1], net_ref, opt_ref)
        rows.append(
            {
                "variant": v,
                "position": i + 1,
                "peak_allocated_bytes": torch.cuda.max_memory_allocated() if cuda else None,
                "peak_reserved_bytes": torch.cuda.max_memory_reserved() if cuda else None,
                "allocated_after_bytes": torch.cuda.memory_allocated() if cuda else None,
                "reserved_after_bytes": torch.cuda.memory_reserved() if cuda else None,
                "kept_bytes": sum(_kept_bytes(k) for k in kept),
            }
        )
    return rows


def run_cases(cases, argv_of, log=print) -> dict:
    """Each case in a process of its own (``argv_of(case)``: a command printing its rows as JSON, last);
    returns case -> its rows."""
    out = {}
    for case in cases:
        done = subprocess.run(argv_of(case), capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"the process of case {case} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        out[case] = json.loads(done.stdout.strip().splitlines()[-1])
        log(f"case {LABELS[case]:5s} {case:9s} " + "  ".join(_peak(r) for r in out[case]))
    return out


def _peak(row) -> str:
    b = row["peak_allocated_bytes"]
    return f"{row['variant']} (no CUDA)" if b is None else f"{row['variant']} {b / 10**6:.0f} MB"


def summarise(rows_by_case: dict, paper=None, tolerance=TOLERANCE) -> dict:
    """The report's ``cases`` section: per case its label, what it keeps, its runs and their steps; the
    paper's steps; the verdict; and, without a GPU, the note saying so."""
    ref = paper_step(paper)
    cases = {
        c: {"label": LABELS[c], "keeps": KEEPS[c], "runs": rows, "steps": case_steps(rows, ref["mean"], tolerance)}
        for c, rows in rows_by_case.items()
    }
    no_gpu = any(r["peak_allocated_bytes"] is None for rows in rows_by_case.values() for r in rows)
    why = NO_GPU if no_gpu else "one run per case: there is no step between runs"
    found = verdict({c: d["steps"] for c, d in cases.items()}, ref["mean"], tolerance, why)
    return {
        "cases": cases,
        "cases_readings": READINGS,
        "paper_step_mb": ref,
        "tolerance": tolerance,
        **found,
        **({"cases_note": NO_GPU} if no_gpu else {}),
    }
