"""Training-step time and peak memory of the variants, measured side by side in one process.

Each (length, variant) builds a fresh model and optimizer, runs warm-up and timed AdamW steps on
the same batches, then frees everything; the order of variants rotates between repeats, and the
first variant is measured again at the end to show that memory does not creep from run to run.
Token ids are random (the model is random too); sequence lengths follow IMDb's, so the padding is real.
"""

from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..experiment.records import git_sha
from ..files import write_atomic
from ..training import data as D
from ..training.clock import Clock
from ..training.config import RunConfig
from ..training.loop import train
from ..training.measure import MB, device_info
from ..training.step import reset_compiler
from .stock import STOCK, STOCK_MODES, measure_stock

PROFILE_STEPS = 5  # the last steps of each measurement, profiled for GPU busy time (not in the median)
SETUPS = {
    "ours": {},
    # issue 39: the setup a T4 user had, on whatever GPU runs it. The kernels a T4 (sm75) has (SDPA's
    # memory-efficient or math, no FlashAttention-2 or cuDNN attention), and so fp16 autocast with a gradient
    # scaler (precision auto, as on a T4; fp32 on a CPU, where fp16 takes minutes a step), eager steps, each
    # batch padded to its own longest review (DataCollatorWithPadding), padded layout
    "t4": {"kernel_set": "sm75", "precision": "auto", "padding": "dynamic", "layout": "padded"},
}
"""A benchmark's setup (``bench --setup``): the RunConfig fields its measurements set beyond the defaults."""


MIN_LENGTH = 8
"""The shortest max_length a run takes (training.config.RunConfig)."""
DATA_VALID = "valid: an IMDb folder of train/test.parquet, a .npy of token counts, or 'hub'"


def check_lengths_source(source) -> np.ndarray | None:
    """``source`` can give review lengths: a .npy holding a 1-D array of token counts (ints >= 1; returned,
    it is small), an existing folder, or 'hub'. ValueError in one line naming the file, before any reading."""
    source = str(source)
    if source.endswith(".npy"):
        if not Path(source).is_file():
            raise ValueError(f"--data {source}: no such file; {DATA_VALID}")
        try:
            counts = np.load(source, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:  # objects (pickled), or not a .npy at all
            why = "it holds Python objects, not numbers" if "pickle" in str(err) else str(err).splitlines()[0][:100]
            raise ValueError(f"--data {source} is not an array of token counts ({why}); {DATA_VALID}") from None
        if counts.ndim != 1 or not counts.size or counts.dtype.kind not in "iu" or counts.min() < 1:
            raise ValueError(
                f"--data {source} holds a {counts.dtype} array of shape {counts.shape}; expected a 1-D array of "
                f"token counts (ints >= 1), as `bundle` writes imdb-train-lengths.npy"
            )
        return counts
    if source != "hub" and not Path(source).is_dir():
        raise ValueError(f"--data {source}: no such folder; {DATA_VALID}")
    return None


def imdb_lengths(source, max_length) -> np.ndarray:
    """Token counts of IMDb train reviews (cut at max_length): from a lengths .npy or by tokenizing."""
    counts = check_lengths_source(source)
    if counts is not None:
        return np.minimum(counts, max_length)
    from ..training.loop import load_tokenizer

    tok = load_tokenizer("minilm-offline")
    texts, _ = D.read_texts(source)["train"]
    return np.minimum(np.array([len(x) for x in tok(texts, truncation=False)["input_ids"]]), max_length)


def model_positions(model) -> int:
    """The longest max_length ``model`` takes (its position embeddings), read from its config alone;
    ValueError in one line for a model that is missing or cannot be reached."""
    from ..experiment.checks import resolve

    resolved = resolve(model)
    return resolved.family.max_length(resolved.config)


def check_lengths(lengths, positions, flag="--lengths") -> list[int]:
    """Each length an int from MIN_LENGTH to ``positions``: ValueError in one line naming the bad ones."""
    bad = [L for L in lengths if isinstance(L, bool) or not isinstance(L, int) or not MIN_LENGTH <= L <= positions]
    if bad or not lengths:
        raise ValueError(
            f"{flag} {' '.join(map(str, bad)) or '(none given)'}: lengths must be ints from {MIN_LENGTH} to "
            f"{positions} (the model's positions)"
        )
    return list(lengths)


def random_split(lengths, n, vocab=30522, seed=0) -> D.Split:
    """n sequences of random token ids whose lengths are drawn from ``lengths``."""
    rng = np.random.default_rng(seed)
    ls = rng.choice(lengths, size=n)
    return D.Split([rng.integers(1000, vocab, size=int(L)).tolist() for L in ls], rng.integers(0, 2, size=n))


KEEP = (
    "step_mode",
    "step_mode_requested",
    "layout",
    "compiled_dynamic",
    "step_time_ms_median",
    "gpu_busy_ms_per_step",
    "host_syncs_per_step",
    "peak_memory_mb",
    "peak_reserved_mb",
    "weights_mb",
    "gradients_mb",
    "optimizer_mb",
    "activations_mb",
    "padding_fraction",
    "tokens_per_s",
    "compile_time_s",
    "batch_shapes",
    "kernels",
    "precision",
    "top_gpu_ops",
    "step_time_ms_by_shape",
    "host_gap_ms_median",
    "profiled_shapes",
    "profiled_warming_steps",
)


def measure(variant, model, length, steps, batch_size, lengths, step_mode="auto", setup="ours") -> dict:
    """One fresh model and optimizer, ``steps`` AdamW steps on random ids of IMDb lengths; then freed.

    The row keeps its own wall time by part (``time_parts_s``: data, model, compile, steps, profile and
    the rest, then ``cleanup``), so a campaign can see where a benchmark's minutes go (issue 38)."""
    clock = Clock(launched=time.time())
    with clock.part("data"):
        split = random_split(lengths, steps * batch_size, seed=length)
    cfg = RunConfig(
        variant=variant,
        model=model,
        max_length=length,
        batch_size=batch_size,
        epochs=1,
        max_steps=steps,
        eval=False,
        data="(random ids, IMDb lengths)",
        step_mode=step_mode,
        **SETUPS[setup],
    )
    res = train(cfg, splits={"train": split, "test": split}, progress=False, profile_steps=PROFILE_STEPS, clock=clock)
    out = {k: res.get(k) for k in KEEP}
    busy = out["gpu_busy_ms_per_step"]
    out["wall_over_busy"] = out["step_time_ms_median"] / busy if busy else None
    with clock.part("cleanup"):
        reset_compiler()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            out["allocated_after_mb"] = torch.cuda.memory_allocated() / MB
    timing = clock.stop()
    out["setup"] = setup
    out["time_parts_s"] = {k: round(v, 3) for k, v in timing["time_parts_s"].items()}
    out["gpu_busy_s"] = timing.get("gpu_busy_s")
    return out


def check_out_file(out, append=False) -> Path | None:
    """``--out`` as a JSON file that can be written (and, with append, read), checked before measuring."""
    if out is None:
        return None
    if not str(out).strip():
        raise ValueError("--out is empty; give a file path for the JSON report, e.g. results/local/bench.json")
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file path for the JSON report, e.g. {out / 'bench.json'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = out.parent / f".probe-{os.getpid()}-{out.name}"
        probe.write_text("ok")
        probe.unlink()
        if out.exists() and not os.access(out, os.W_OK):
            raise PermissionError(13, "Permission denied", str(out))
    except OSError as err:
        why = (
            "a folder on its path is a file" if isinstance(err, (FileExistsError, NotADirectoryError)) else err.strerror
        )
        raise ValueError(f"cannot write --out {out}: {why or err}; give a writable file path") from None
    if append and out.exists():
        try:
            json.loads(out.read_text())["rows"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise ValueError(f"--append: {out} is not a bench report (JSON with 'rows'); give another --out") from None
    return out


def check_bench(variants, steps, repeats, batch_size, step_modes, model=None, lengths=(), source=None):
    """Names, counts, lengths (against ``model``'s positions, when given) and the data source, each refused
    in one line (ValueError) before anything is read or measured."""
    from ..training.step import STEP_MODES
    from ..variants import VARIANTS

    for name, value in (("steps", steps), ("repeats", repeats), ("batch size", batch_size)):
        low = 2 if name == "batch size" else 1  # a run's batch (RunConfig.batch_size)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    for what, names, valid in (("variant(s)", variants, VARIANTS), ("step mode(s)", step_modes, STEP_MODES[1:])):
        unknown = [n for n in names if n not in valid]
        if unknown or not names:
            raise ValueError(f"unknown {what} {', '.join(unknown) or '(none given)'}; valid: {', '.join(valid)}")
    if model is not None:
        check_lengths(list(lengths), model_positions(model))
    if source is not None:
        check_lengths_source(source)


def default_step_modes() -> tuple:
    """whole, captured and eager on a GPU that can capture, eager alone elsewhere (the others would run eager)."""
    from ..training.step import resolve_step_mode

    device = "cuda" if torch.cuda.is_available() else "cpu"
    graphs = resolve_step_mode("whole", device, warn=False) == "whole"
    return ("whole", "captured", "eager") if graphs else ("eager",)


def check_step_modes_here(step_modes):
    """Refuse modes that would fall back to eager here: their rows would be eager rows under another name."""
    from ..training.step import resolve_step_mode

    device = "cuda" if torch.cuda.is_available() else "cpu"
    fallen = [m for m in step_modes if resolve_step_mode(m, device, warn=False) != m]
    if fallen:
        where = "a CPU" if device == "cpu" else "this GPU (compute capability < 7.0)"
        raise ValueError(
            f"step mode(s) {', '.join(fallen)} cannot run on {where} and would run eager; "
            "give --step-modes eager (the default here)"
        )


class BenchReport:
    """The report a bench run rewrites after every measurement (after the rows of the report it appends to)."""

    def __init__(self, model, batch_size, steps, repeats, out=None, append=False, setup="ours"):
        self.model, self.batch_size, self.out, self.setup = model, batch_size, out, setup
        self.rows, self.sha, versions = [], git_sha(), device_info()
        self.report = {
            "model": [model],
            "batch_size": batch_size,
            "steps": steps,
            "repeats": repeats,
            "setup": setup,
            "setup_config": SETUPS[setup],
            "git_sha": self.sha,
            "device": versions["device"],
            "versions": versions,
            "rows": self.rows,
        }
        self.kept = json.loads(out.read_text())["rows"] if out and append and out.exists() else []

    def add(self, variant, length, repeat, t0, measured) -> None:
        """One measurement as a report row: what was measured, where, from which commit."""
        self.rows.append(
            {
                "variant": variant,
                "max_length": length,
                "model": self.model,
                "repeat": repeat,
                "batch_size": self.batch_size,
                "git_sha": self.sha,
                "wall_s": time.perf_counter() - t0,
                **measured,
            }
        )

    def save(self) -> None:
        """Rewrite ``out`` (when given) with the report and every row so far, the appended-to rows first."""
        if self.out:
            everything = self.kept + self.rows
            write_atomic(
                self.out,
                json.dumps(
                    self.report | {"rows": everything, "model": sorted({r["model"] for r in everything})},
                    indent=1,
                    default=str,
                ),
            )


def bench(
    variants,
    model,
    lengths_list,
    steps,
    repeats,
    batch_size,
    source=None,
    out=None,
    step_modes=None,
    append=False,
    reference=False,
    once=(),
    setup="ours",
) -> list[dict]:
    """Measure every (length, variant, step mode) ``repeats`` times in one process; print a table.

    The order rotates between repeats, and the first pair of the last repeat is measured again at
    the end, to show that memory does not creep from run to run. append: add the rows to ``out``.
    reference: also measure transformers' own model (no attnpaper; bench/stock.py) eager and under
    torch.compile(mode="reduce-overhead") at each length (a GPU only). The report is rewritten after
    every measurement, so a run cut short keeps what it measured; every row says its git commit.
    step_modes: default whole, captured and eager (eager alone where they cannot run). Bad counts or
    names, a mode that would fall back to eager here (captured on a CPU) and an ``out`` that cannot
    be written are refused (ValueError, one line) before any measurement. ``once``: step modes measured
    in the first repeat at the first length only (the campaign's captured rows: each costs a full
    compile, and the book reads them at one length). ``setup``: a key of SETUPS; 't4' (issue 39) measures
    the setup a T4 user had (eager steps only, no reference rows).
    """
    step_modes = tuple(step_modes) if step_modes is not None else default_step_modes()
    source = source or D.default_source()
    check_bench(variants, steps, repeats, batch_size, step_modes, model, lengths_list, source)
    check_step_modes_here(step_modes)
    check_setup(setup, step_modes, reference)
    if not set(once) <= set(step_modes):
        raise ValueError(
            f"--once {' '.join(once)}: measured once must be among the step modes ({' '.join(step_modes)})"
        )
    out = check_out_file(out, append)
    if reference and not torch.cuda.is_available():
        raise ValueError("--reference measures transformers' captured step and needs a CUDA GPU")
    report = BenchReport(model, batch_size, steps, repeats, out, append, setup)
    full = imdb_lengths(source, 2**31 - 1)  # read (or tokenized) once, cut at each length
    try:
        _measure_all(report, variants, step_modes, lengths_list, full, (steps, repeats, batch_size), reference, once)
    except KeyboardInterrupt as err:  # every row measured so far is already in ``out``
        raise BenchInterrupted(str(err) or "SIGINT", len(report.rows), out) from None
    print(table(report.report))
    report.save()
    return report.rows


def check_setup(setup, step_modes, reference) -> None:
    """A setup of SETUPS, and what it can run: 't4' pads each batch to itself, so eager steps only (a recorded
    step replays one shape), and transformers' reference rows are not measured in it. ValueError, one line."""
    if setup not in SETUPS:
        raise ValueError(f"unknown setup {setup!r}; valid: {', '.join(SETUPS)}")
    if SETUPS[setup].get("padding") == "dynamic" and tuple(step_modes) != ("eager",):
        raise ValueError(f"--setup {setup} pads every batch to its own length: give --step-modes eager (only)")
    if setup != "ours" and reference:
        raise ValueError(f"--reference measures transformers' own model in our setup; drop it for --setup {setup}")


class BenchInterrupted(Exception):
    """SIGINT or SIGTERM stopped a bench: ``rows`` measurements were made (and saved, when ``out`` is given)."""

    def __init__(self, signal_name: str, rows: int, out):
        super().__init__(signal_name)
        self.signal_name, self.rows, self.out = signal_name, rows, out


def _measure_all(report, variants, step_modes, lengths_list, full, sizes, reference, once=()):
    """bench's measurements, each added to ``report`` and saved as it is made; ``sizes``: (steps,
    repeats, batch size); modes in ``once`` at the first length's first repeat only."""
    model, (steps, repeats, batch_size) = report.model, sizes
    pairs = [(v, m) for v in variants for m in step_modes]
    for L in lengths_list:
        lengths = np.minimum(full, L)
        for r in range(repeats):
            order = pairs[r % len(pairs) :] + pairs[: r % len(pairs)]
            order = [p for p in order if p[1] not in once or (r == 0 and L == lengths_list[0])]
            for v, mode in order + ([order[0]] if r == repeats - 1 and order else []):
                t0 = time.perf_counter()
                m = measure(v, model, L, steps, batch_size, lengths, mode, report.setup)
                report.add(v, L, r, t0, m)
                report.save()
                print(
                    f"L={L:4d} rep={r} {v:9s} {m['step_mode']:9s} {m['step_time_ms_median']:8.2f} ms/step "
                    f"gpu busy {m.get('gpu_busy_ms_per_step') or 0:7.2f} ms "
                    f"peak {m['peak_memory_mb'] or 0:8.0f} MB  pad {m['padding_fraction']:.2f} "
                    f"syncs {m.get('host_syncs_per_step')}",
                    flush=True,
                )
            if reference:
                measure_references(report, model, L, r, steps, batch_size, lengths)


def measure_references(report: BenchReport, model, length, repeat, steps, batch_size, lengths) -> None:
    """transformers' own model in each STOCK_MODES mode on the variants' batches, rows added to ``report``."""
    for mode in STOCK_MODES:
        t0 = time.perf_counter()
        split = random_split(lengths, steps * batch_size, seed=length)
        m = measure_stock(model, mode, split, steps, batch_size, length, PROFILE_STEPS)
        report.add(STOCK, length, repeat, t0, m)
        print(
            f"L={length:4d} rep={repeat} {STOCK} {mode} {m['step_time_ms_median']:8.2f} ms/step "
            f"gpu busy {m.get('gpu_busy_ms_per_step') or 0:7.2f} ms",
            flush=True,
        )
        report.save()


def table(report) -> str:
    """Median wall and GPU-busy ms per step, their ratio, and peak memory per (length, variant, step mode)."""
    from ..analysis.steps import step_table

    variants = {r["variant"] for r in report["rows"]}
    ref = "sdpa" if "sdpa" in variants else ("baseline" if "baseline" in variants else None)
    g = step_table(
        report["rows"],
        ["model", "max_length", "variant", "step_mode"],
        ("wall_ms", "busy_ms", "peak_mb", "reserved_mb", "wall_over_busy"),
        ref=ref,
    )
    g = g.rename(columns={"busy_ms": "gpu_busy_ms"})
    head = f"{report['versions'].get('device')} | batch {report['batch_size']}"
    return f"{head}\n{g.round(3).to_string()}"
