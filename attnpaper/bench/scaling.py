"""Where attention starts to matter: `python -m attnpaper scaling kernels|model|all` over sequence length.

kernels: each attention mechanism alone (attnpaper.bench.kernels), fwd and fwd+bwd, bf16, 12 x 64
heads, tokens per batch constant. model: the training step of each variant at DistilBERT's shape
(attnpaper.bench.model; whole, one CUDA graph per step, unless --step-mode says otherwise), tokens per
batch constant, plus the paper's batch of 32 at the lengths up to 512 (rows say their tokens per batch).
Both write a JSON report (rows plus device, versions, git commit), rewritten after every
measurement, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..variants import VARIANTS as MODEL_VARIANTS  # the model sweep's default: every variant

KERNEL_LENGTHS = (128, 256, 512, 1024, 2048, 4096, 8192, 16384)
MODEL_LENGTHS = (128, 256, 512, 1024, 2048, 4096, 8192)
KERNEL_TOKENS, MODEL_TOKENS = 32768, 16384
PAPER_BATCH = 32  # the model sweep also measures this batch at N <= IMDB_MAX: the rows the bench has
# attnpaper.bench.kernels' MECHANISMS (names, in order) and PASSES, named here without importing torch,
# so that the command line's --help is instant; tests/test_scaling.py keeps them equal.
MECHANISMS = ("eager", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "varlen", "attnpaper-flash", "flash-attn")
MECHANISMS += ("elu", "favor+64", "favor+128", "favor+266", "elu-eager", "favor+266-eager")
PASSES = ("fwd", "fwd_bwd")


def check_lengths(lengths, tokens, min_batch=1) -> list[int]:
    """Each length a positive int that divides ``tokens`` into at least ``min_batch`` sequences."""
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"tokens per batch must be a positive int, got {tokens!r}")
    bad = [
        n
        for n in lengths
        if isinstance(n, bool) or not isinstance(n, int) or n < 1 or tokens % n or tokens // n < min_batch
    ]
    if bad or not lengths:
        raise ValueError(
            f"bad lengths {bad or '(none)'}: each must be a positive int dividing tokens per batch "
            f"({tokens}) into at least {min_batch} sequences; e.g. {' '.join(map(str, KERNEL_LENGTHS[:4]))}"
        )
    return sorted(set(lengths))


def check_names(names, valid, what) -> list[str]:
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise ValueError(f"unknown {what} {', '.join(unknown) or '(none given)'}; valid: {', '.join(valid)}")
    return list(names)


def check_count(value, name, low=1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def header(kind, lengths, out=None, append=False, **settings) -> dict:
    """What every report starts with: what was measured, where, with which code.

    append: keep the rows of ``out`` at other lengths (each row's ``run`` indexes ``runs``, one entry
    per process, so every comparison at one length stays within one process)."""
    from ..experiment.records import git_sha
    from ..training.measure import device_info

    run = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_sha": git_sha(),
        "lengths": lengths,
        "versions": device_info(),
    }
    old = json.loads(Path(out).read_text()) if append and out and Path(out).exists() else None
    if old is not None and old.get("kind") != kind:
        raise ValueError(f"--append: {out} holds a {old.get('kind')!r} report, not {kind!r}")
    for key in ("tokens_per_batch", "model", "dtype", "head_dim"):
        if old is not None and key in settings and old.get(key, settings[key]) != settings[key]:
            raise ValueError(f"--append: {out} was measured with {key}={old[key]!r}, not {settings[key]!r}")
    runs, rows = [], []
    if old is not None:
        runs = old.get("runs") or [
            {k: old.get(k) for k in ("started", "git_sha", "versions", "matmul_tflops")}
            | {"lengths": sorted({r["seq_len"] for r in old["rows"]})}
        ]  # a one-run report
        rows = [{"run": 0, **r} for r in old["rows"] if r["seq_len"] not in lengths]
    return {"kind": kind, **settings, **run, "device": run["versions"]["device"], "runs": runs + [run], "rows": rows}


def write(report, out):
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=1, default=str))


def _device(device=None):
    """torch.device ``device``, or the GPU if there is one; on a CPU, one line saying what the numbers mean."""
    import torch

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda":
        print(
            f"no CUDA GPU ({device}): timing with the host clock; SDPA's fused GPU backends are "
            "unavailable here, and the numbers say nothing about a GPU",
            file=sys.stderr,
            flush=True,
        )
    return device


def run_kernels(
    lengths=KERNEL_LENGTHS,
    tokens=KERNEL_TOKENS,
    mechanisms=None,
    passes=("fwd", "fwd_bwd"),
    warmup=5,
    repeats=20,
    out=None,
    append=False,
    device=None,
    log=print,
) -> dict:
    """Every (length, mechanism, pass): median ms, TFLOP/s of exact kernels, peak MB, status."""
    import torch

    from ..training.step import reset_compiler
    from . import kernels as K

    lengths = check_lengths(list(lengths), tokens)
    mechanisms = check_names(list(mechanisms or K.MECHANISMS), list(K.MECHANISMS), "mechanism(s)")
    passes = check_names(list(passes), K.PASSES, "pass(es)")
    warmup, repeats = check_count(warmup, "warmup", 0), check_count(repeats, "repeats")
    device = _device(device)
    torch.backends.cuda.matmul.allow_tf32 = True  # as in training: FAVOR+'s float32 w.x runs as TF32
    reset_compiler()
    report = header(
        "scaling-kernels",
        lengths,
        out,
        append,
        heads=K.HEADS,
        head_dim=K.HEAD_DIM,
        dtype="bf16" if device.type == "cuda" else "fp32",
        tokens_per_batch=tokens,
        warmup=warmup,
        repeats=repeats,
        rotations=K.ROTATIONS,
        flops="4*B*H*N^2*d forward, x(1+2.5) forward+backward, non-causal",
        mechanisms={m: K.MECHANISMS[m].what for m in mechanisms},
        matmul_tflops=K.matmul_tflops(device),
    )
    report["runs"][-1]["matmul_tflops"] = report["matmul_tflops"]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    for n in lengths:
        sets = K.input_sets(tokens // n, n, device, dtype=dtype, seed=n)
        for name in mechanisms:
            for row in K.measure(K.MECHANISMS[name], tokens // n, n, passes, device, warmup, repeats, sets):
                if row.get("tflops") and report["matmul_tflops"]:
                    row["tflops_of_matmul"] = row["tflops"] / report["matmul_tflops"]
                report["rows"].append({**row, "run": len(report["runs"]) - 1})
                log(_kernel_line(row))
            write(report, out)  # after every mechanism: a run cut short keeps what it measured
        del sets
    return report


def _kernel_line(r) -> str:
    ms = f"{r['ms']:9.3f} ms" if r.get("ms") is not None else f"{r['status']:>12s}"
    tf = f"{r['tflops']:6.0f} TFLOP/s" if r.get("tflops") else " " * 14
    mb = f"{r['peak_mb']:9.0f} MB" if r.get("peak_mb") is not None else ""
    return f"N={r['seq_len']:6d} B={r['batch']:4d} {r['mechanism']:16s} {r['pass']:8s} {ms} {tf} {mb}"


def check_model(lengths, tokens, variants, model, steps, data, step_mode):
    """Validated (lengths, variants, steps) for run_model; raises ValueError/FileNotFoundError first."""
    from ..training.step import STEP_MODES
    from ..variants import VARIANTS
    from . import model as S

    lengths = check_lengths(list(lengths), tokens, min_batch=2)
    variants = check_names(list(variants), VARIANTS, "variant(s)")
    check_names([step_mode], STEP_MODES, "step mode")
    S.model_config(model, 1)  # a bad model name fails here, before anything is measured
    if any(n <= S.IMDB_MAX for n in lengths):
        if data is None:
            raise ValueError("lengths up to 512 follow IMDb's: pass --data (a lengths .npy or an IMDb folder)")
        if not Path(data).exists():
            raise FileNotFoundError(
                f"--data {data} does not exist; expected a lengths .npy (python -m attnpaper "
                "bundle writes bundle/imdb-train-lengths.npy) or an IMDb folder"
            )
    return lengths, variants, check_count(steps, "steps")


def run_model(
    lengths=MODEL_LENGTHS,
    tokens=MODEL_TOKENS,
    variants=MODEL_VARIANTS,
    model="distilbert-base-random",
    steps=20,
    data=None,
    step_mode="auto",
    out=None,
    append=False,
    device=None,
    log=print,
    paper_batch=PAPER_BATCH,
) -> dict:
    """Every (length, variant): the training step's wall and GPU-busy ms, peak memory, attention kernels' ms.

    At ``tokens`` per batch (batch = tokens / N); at N <= IMDB_MAX also at ``paper_batch`` sequences
    per batch with the training loop's buckets (0: not), unless that is the same batch. Each row
    says its ``batch_size`` and ``tokens_per_batch``. The variants' order rotates from one length to
    the next. A variant that runs out of memory is recorded as 'oom' and not tried at longer lengths
    (recorded as 'skipped').
    """
    import torch

    from . import model as S
    from .step import imdb_lengths

    lengths, variants, steps = check_model(lengths, tokens, variants, model, steps, data, step_mode)
    paper_batch = check_count(paper_batch, "paper batch", 0)
    short = [n for n in lengths if n <= S.IMDB_MAX]
    imdb = imdb_lengths(data, max(short)) if short else None
    device = _device(device)
    report = header(
        "scaling-model",
        lengths,
        out,
        append,
        model=model,
        tokens_per_batch=tokens,
        steps=steps,
        profile_steps=S.PROFILE_STEPS,
        step_mode_requested=step_mode,
        paper_batch=paper_batch,
        data=f"random ids; IMDb lengths ({data}) up to {S.IMDB_MAX} tokens, full length beyond",
        attention_kernel_pattern=S.ATTENTION_KERNEL.pattern,
    )
    failed: set = set()
    for i, n in enumerate(lengths):
        order = variants[i % len(variants) :] + variants[: i % len(variants)]
        batches = [(tokens // n, tokens)]
        if paper_batch and n <= S.IMDB_MAX and paper_batch != tokens // n:
            batches.append((paper_batch, None))  # None: the training loop's buckets, as in the bench
        for v in order:
            for batch, bucket_tokens in batches:
                row = {
                    "variant": v,
                    "seq_len": n,
                    "batch_size": batch,
                    "tokens_per_batch": batch * n,
                    "model": model,
                    "run": len(report["runs"]) - 1,
                }
                if v in failed:
                    row.update(status="skipped", error="out of memory at a shorter length")
                else:
                    try:
                        row.update(
                            S.measure_step(v, model, n, batch, bucket_tokens, imdb, steps, device, step_mode),
                            status="ok",
                        )
                    except torch.OutOfMemoryError as err:
                        failed.add(v)
                        row.update(status="oom", error=str(err).strip().splitlines()[0][:300])
                    S.free(device)
                report["rows"].append(row)
                log(_model_line(row))
                write(report, out)
    return report


def _model_line(r) -> str:
    if r["status"] != "ok":
        return f"N={r['seq_len']:5d} B={r['batch_size']:4d} {r['variant']:9s} {r['status']}"
    busy, attn = r["gpu_busy_ms_per_step"] or 0.0, r.get("attention_ms_per_step")
    share = f"attn {attn / busy:5.1%}" if attn and busy else ""
    return (
        f"N={r['seq_len']:5d} B={r['batch_size']:4d} {r['variant']:9s} {r['step_mode']:8s} "
        f"wall {r['step_time_ms_median']:8.2f} ms  busy {busy:8.2f} ms  "
        f"peak {r.get('peak_memory_mb') or 0:8.0f} MB  {share}"
    )
