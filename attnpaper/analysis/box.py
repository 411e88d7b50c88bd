"""The answer box as HTML: ``answer.load``'s numbers in three small tables, one screen at most.

Chapter 8 glues the HTML once; chapter 1 and the discussion paste that glued output, so the box is one
source shown twice. Every number comes from ``answer.load``; a part that was not measured says so.
The box only shows numbers: what they mean is the verdict (``verdict``), and the details (the stock
compiled step, the accuracy arms' comparisons, the memory test's peaks) are in chapter 8.
Kept as HTML rather than glued DataFrames: one frame holds the three tables with their captions.
"""

from __future__ import annotations

from html import escape

from ..variants import PAPER_ORDER, TABLE
from .answer import shape_steps, spread
from .results import PAPER
from .tables import points

PAYS = {
    "kernel_favor266": "FAVOR+ kernel (trained here)",
    "kernel_elu": "elu+1 kernel (not trained)",
    "step_linear_exact": "linear step",
    "step_hybrid_exact": "hybrid step",
    "step_flash_sdpa": "flash step below sdpa's",
    "step_linear_mem_flash": "linear memory below flash's",
}
"""The crossovers the box shows (chapter 9), FAVOR+ first: it is the linear attention the runs train."""

ARM_WORDS = {"fp16": "fp16 with a gradient scaler", "dropout": "attention dropout 0.1 in the baseline"}
"""The accuracy arms (issue 20, 5c) and what each changed."""


def pts(x: float) -> str:
    """Signed points as the results table prints them (``tables.points``), with a typographic minus."""
    return points(x).replace("-", "\u2212")


def interval_pts(e, stem="acc") -> str:
    """'+0.00 (-0.18 to +0.18)': a mean in points and its 95% interval."""
    return f"{pts(e[f'{stem}_pts'])} ({pts(e[f'{stem}_low'])} to {pts(e[f'{stem}_high'])})"


def interval_ratio(e, stem) -> str:
    """'0.86x (0.85 to 0.87)': a ratio to the baseline and its 95% interval."""
    return f"{e[f'{stem}_ratio']:.2f}\u00d7 ({e[f'{stem}_low']:.2f} to {e[f'{stem}_high']:.2f})"


def _cell(text: str) -> str:
    """A table cell whose interval, in parentheses, is set smaller than its value."""
    value, _, rest = text.partition(" (")
    return f"<td>{value}<span class='answer-ci'> {rest[:-1]}</span></td>" if rest else f"<td>{text}</td>"


def stand_in(model: str) -> str:
    if "MiniLM" in model:
        return "all-MiniLM-L6-v2, our offline stand-in for DistilBERT-base"
    return model


def _step(steps, v) -> str:
    """DistilBERT-base's whole step: time and memory against the baseline's, or not measured."""
    if steps is None or v not in steps.index:
        return "<td>not measured</td>"
    return f"<td>{steps.loc[v, 'wall_vs_baseline']:.2f}\u00d7 / {steps.loc[v, 'mem_vs_baseline']:.2f}\u00d7</td>"


def _rows(part, length, steps) -> list[str]:
    """One length's rows: the baseline's own figures, then each variant against it, paired by seed."""
    b = part["baseline"]
    base_step = "<td>reference</td>" if steps is not None else "<td>not measured</td>"
    rows = [
        f"<tr class='answer-group'><th colspan='6'>{escape(str(length))} tokens, {b['seeds']} seeds</th></tr>",
        f"<tr><td>baseline</td><td>accuracy {b['accuracy']:.4f}</td><td>{b['train_s']:.2f} s</td>"
        f"<td>{b['train_compiled_s']:.1f} s</td><td>{b['peak_mb']:,.0f} MB</td>{base_step}</tr>",
    ]
    for v, e in part["effects"].drop("baseline", errors="ignore").iterrows():
        cells = [interval_pts(e), interval_ratio(e, "time"), interval_ratio(e, "compiled"), interval_ratio(e, "mem")]
        rows.append(f"<tr><td>{escape(v)}</td>{''.join(map(_cell, cells))}{_step(steps, v)}</tr>")
    return rows


def table(ans) -> str:
    """Each variant against the baseline at the paper's length and, where run, at 512 tokens; the last
    column is the benchmark's whole step at DistilBERT-base's shape, the model the paper trained."""
    head = (
        "<tr><th>Variant</th><th>Accuracy, points</th><th>Training time</th><th>With compile</th>"
        "<th>Peak memory</th><th>DistilBERT-base step: time / memory</th></tr>"
    )
    length = ans["setup"]["max_length"]
    rows = _rows(ans, length, shape_steps(ans, int(length)))
    if "long" in ans and "baseline" in ans["long"]:
        n = ans["long"]["setup"]["max_length"]
        rows += _rows(ans["long"], n, shape_steps(ans, int(n)))
    else:
        rows.append("<tr><td colspan='6'>The same runs at IMDb's own 512 tokens: not yet run at this commit.</td></tr>")
    return f"<table class='answer-table'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def pays(ans) -> str:
    """Chapter 9's crossovers as one row of lengths, or what is not measured yet."""
    caption = (
        "<p class='answer-caption'><b>Where each starts to pay</b> (chapter 9's sweeps at DistilBERT-base's shape, "
        "not the runs above): from which length on it stays below the fastest exact kernel or step</p>"
    )
    if "pays_from" not in ans:
        return caption + "<p>Not yet measured at this commit: chapter 9's scaling sweeps are still to run.</p>"
    found = ans["pays_from"]
    shown = [k for k in PAYS if k in found]
    if not any(k.startswith("step_") for k in found):
        return (
            caption + _row_table([PAYS[k] for k in shown], [_n(found[k]) for k in shown]) + "<p>The whole steps' "
            "crossovers: not yet measured at this commit.</p>"
        )
    notes = []
    for v, lengths in found.get("step_unrecorded", {}).items():
        notes.append(f"{escape(v)}'s whole step has no record from N = {min(lengths):,}")
    if found.get("step_without_tf32"):
        notes.append(f"the {' and '.join(map(escape, found['step_without_tf32']))} steps ran without TF32")
    note = f"<p>Not comparable beyond that: {'; '.join(notes)} (chapter 9 says why).</p>" if notes else ""
    return caption + _row_table([PAYS[k] for k in shown], [_n(found[k]) for k in shown]) + note


def _n(n) -> str:
    return f"N = {n:,}" if n else "none up to the longest"


def _row_table(heads, cells) -> str:
    head = "".join(f"<th>{escape(h, quote=False)}</th>" for h in heads)
    body = "".join(f"<td>{c}</td>" for c in cells)
    table = "<table class='answer-table answer-pays'>"
    return f"{table}<thead><tr>{head}</tr></thead><tbody><tr>{body}</tr></tbody></table>"


def artefacts(ans) -> str:
    """The paper's three odd numbers beside what this book measured of each, and whether that explains it."""
    rows = [_memory(ans), _time(ans), _accuracy(ans)]
    head = "<tr><th>The paper's odd number</th><th>The paper (T4)</th><th>Measured here</th><th>Explained?</th></tr>"
    body = "".join(f"<tr>{''.join(f'<td>{c}</td>' for c in r)}</tr>" for r in rows)
    caption = "<p class='answer-caption'><b>The paper's artefacts, put to the test</b> (chapter 8)</p>"
    return f"{caption}<table class='answer-table answer-tests-table'><thead>{head}</thead><tbody>{body}</tbody></table>"


def _memory(ans) -> list[str]:
    steps = PAPER["peak_memory_mb"].reindex(PAPER_ORDER).diff().iloc[1:]
    paper = f"peak grows {steps.min():,.0f} to {steps.max():,.0f} MB a run"
    if "memory" not in ans:
        return ["memory in run order", paper, "not yet measured at this commit", "open"]
    m = ans["memory"]
    kept = m["kept_peaks_mb"]
    grows = ", ".join(f"{b - a:+,.0f}" for a, b in zip(kept, kept[1:]))
    here = f"each run's model, gradients and AdamW state kept in one process: {grows} MB"
    return ["memory in run order", paper, here, "not by that; the cause is open"]


def _time(ans) -> list[str]:
    times = PAPER["train_time_s"]
    paper = f"four times within {100 * (times.max() / times.min() - 1):.1f}%"
    rows = [r for r in ans.get("bench", []) if "distilbert" in r["model"].lower() and r["max_length"] == 128]
    if not rows:
        return ["equal training times", paper, "not yet measured at this commit", "open"]
    eager = spread(rows, rows[0]["model"], 128, "eager")
    here = f"eager steps, DistilBERT-base's shape: slowest {eager:.2f}\u00d7 the fastest"
    return ["equal training times", paper, here, "not on this card; a T4 is not measured"]


def _accuracy(ans) -> list[str]:
    loss = 100 * (PAPER.loc["baseline", "accuracy"] - PAPER.loc["flash", "accuracy"])
    paper = f"flash {pts(-loss)} points below the baseline"
    ran = [arm for arm in ARM_WORDS if arm in ans]
    if not ran:
        return ["an exact kernel loses accuracy", paper, "the arms are not yet run at this commit", "open"]
    largest = max(ans[arm]["largest_move_pts"] for arm in ran)
    words = " or ".join(ARM_WORDS[a] for a in ran)
    here = f"{words}: moves it by at most {largest:.2f} points"
    verdict = "not by these; the cause is open" if largest < loss / 2 else "possibly: an arm moves it by half or more"
    return ["an exact kernel loses accuracy", paper, here, verdict]


def render(ans) -> str:
    """The box: its setup in one sentence, the effects table, the crossovers, the artefacts."""
    s = ans["setup"]
    sha = ", ".join(f"<code>{escape(x[:7])}</code>" for x in s["git_sha"].split(", "))
    labels = "; ".join(f"{escape(v)}: {escape(row.label)}" for v, row in TABLE.items() if v != "baseline")
    intro = (
        f"<p class='answer-setup'>{escape(stand_in(s['model']))} on IMDb: batch {s['batch_size']}, {s['epochs']} "
        f"epochs, AdamW at lr {s['lr']}, {escape(s['precision'])}, {escape(s['step_mode'])} step; one "
        f"{escape(s['device'])}, commit {sha}. Against the eager baseline, paired by seed: mean and 95% interval; "
        f"training time without compile unless said. {labels}.</p>"
    )
    parts = [intro, table(ans), pays(ans), artefacts(ans)]
    return f"<div class='answer-box'><p class='answer-title'>The answer in numbers</p>{''.join(parts)}</div>"
