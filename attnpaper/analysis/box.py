"""The answer box as HTML: ``answer.load``'s numbers in one table and three short paragraphs.

Chapter 8 glues the HTML once; chapter 1 and the discussion paste that glued output, so the box is one
source shown twice. Every number comes from ``answer.load``; a part that was not measured says so.
Kept as HTML rather than a glued DataFrame: the box mixes a table with sentences whose wording follows
the numbers (an interval that contains zero reads "no difference the seeds can detect").
"""

from __future__ import annotations

from html import escape

from .answer import PAPER_ORDER, spread, step_ratios
from .results import PAPER
from .tables import points

LABELS = {
    "sdpa": "sdpa (transformers' default)",
    "flash": "flash (FlashAttention)",
    "linear": "linear (Performer FAVOR+)",
    "hybrid": "hybrid (flash early, linear late)",
}
PAYS = {
    "kernel_elu": "the elu linear kernel below the fastest exact kernel",
    "kernel_favor266": "the FAVOR+ kernel below the fastest exact kernel",
    "step_flash_sdpa": "the flash step below the sdpa step",
    "step_linear_exact": "the linear step below the fastest exact step recorded",
    "step_hybrid_exact": "the hybrid step below the fastest exact step recorded",
    "step_linear_mem_flash": "linear's peak memory below flash's",
}

ARM_WORDS = {
    "fp16": "fp16 autocast with a gradient scaler (a T4 has no bf16)",
    "dropout": "attention dropout 0.1 in the baseline (DistilBERT's default), none in flash",
}
"""The accuracy arms (issue 20, 5c) and what each changed."""


def pts(x: float) -> str:
    """Signed points as the results table prints them (``tables.points``), with a typographic minus."""
    return points(x).replace("-", "\u2212")


def interval_pts(e, stem="acc") -> str:
    return f"{pts(e[f'{stem}_pts'])} ({pts(e[f'{stem}_low'])} to {pts(e[f'{stem}_high'])})"


def interval_ratio(e, stem) -> str:
    return f"{e[f'{stem}_ratio']:.2f}\u00d7 ({e[f'{stem}_low']:.2f} to {e[f'{stem}_high']:.2f})"


def stand_in(model: str) -> str:
    if "MiniLM" in model:
        return "all-MiniLM-L6-v2, our offline stand-in for DistilBERT-base"
    return model


def table(ans) -> str:
    """Baseline's own figures, then each variant against it (paired by seed): the paper's setup, or the
    same runs at 512 tokens given ``ans["long"]``."""
    b = ans["baseline"]
    head = (
        "<tr><th>Variant</th><th>Accuracy vs baseline, points (95% CI)</th>"
        "<th>Training time vs baseline (95% CI)</th><th>Peak memory vs baseline (95% CI)</th>"
        "<th>Seed pairs</th></tr>"
    )
    rows = [
        f"<tr><td>baseline (eager softmax)</td><td>accuracy {b['accuracy']:.4f}</td>"
        f"<td>{b['train_s']:.2f} s, compile excluded</td><td>{b['peak_mb']:,.0f} MB</td><td>{b['seeds']}</td></tr>"
    ]
    for v, e in ans["effects"].drop("baseline", errors="ignore").iterrows():
        rows.append(
            f"<tr><td>{escape(LABELS.get(v, v))}</td><td>{interval_pts(e)}</td><td>{interval_ratio(e, 'time')}</td>"
            f"<td>{interval_ratio(e, 'mem')}</td><td>{int(e['pairs'])}</td></tr>"
        )
    return f"<table class='answer-table'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def for_free(ans) -> str:
    if "sdpa" not in ans["effects"].index:
        return "<b>For free.</b> Not measured: no run of transformers' default attention (sdpa) in these records."
    e = ans["effects"].loc["sdpa"]
    same = e["acc_low"] <= 0 <= e["acc_high"]
    acc = "no accuracy difference the seeds can detect" if same else f"{pts(e['acc_pts'])} points of accuracy"
    text = (
        f"<b>For free.</b> transformers' default attention (sdpa) trains in {e['time_ratio']:.2f}\u00d7 the "
        f"baseline's time with {e['mem_ratio']:.2f}\u00d7 its peak memory, and {acc}."
    )
    model, n = ans["setup"]["model"], int(ans["setup"]["max_length"])
    rows = [r for r in ans.get("bench", []) if r["model"] == model and r["max_length"] == n]
    if rows:
        t = step_ratios(rows, model, n)
        if "stock" in t.index and "sdpa" in t.index:
            ours, stock = t.loc["sdpa", "wall_ms"], t.loc["stock", "wall_ms"]
            text += (
                f" The step this book captures whole takes {ours:.2f} ms against {stock:.2f} ms for transformers' "
                f'own model under <code>torch.compile(mode="reduce-overhead")</code>: {stock / ours:.2f}\u00d7 as '
                f"fast, at the same shape and batch, side by side in one process."
            )
    return text


def pays(ans) -> str:
    """The crossover lengths of chapter 9 (kernels alone, then whole steps), then the same runs at 512 tokens."""
    if "pays_from" not in ans:
        text = (
            "<b>Where each mechanism starts to pay.</b> Not yet measured at this commit: chapter 9's scaling "
            "sweeps are still to run on this GPU."
        )
    else:
        found = [
            f"{what} from N = {ans['pays_from'][k]:,}"
            if ans["pays_from"].get(k)
            else f"{what}: not within the lengths run"
            for k, what in PAYS.items()
            if k in ans["pays_from"]
        ]
        if not any(k.startswith("step_") for k in ans["pays_from"]):
            found.append("the whole steps' crossovers: not yet measured at this commit")
        if ans["pays_from"].get("step_without_tf32"):
            found.append(
                f"the {' and '.join(map(escape, ans['pays_from']['step_without_tf32']))} steps ran FAVOR+'s float32 "
                "products without the TF32 that training gives them, so their crossovers lie at or before these"
            )
        for v, lengths in ans["pays_from"].get("step_unrecorded", {}).items():
            found.append(
                f"{escape(v)}'s whole step has no record from N = {min(lengths):,} (chapter 9 says why), so "
                f"the comparisons with it stop below that length"
            )
        text = "<b>Where each mechanism starts to pay</b> (chapter 9): " + "; ".join(found) + "."
    if "long" not in ans or "baseline" not in ans["long"]:
        return text + " The same runs at IMDb's own 512 tokens: not yet run at this commit."
    n = ans["long"]["setup"]["max_length"]
    return (
        f"<p>{text} The same runs with reviews cut at {escape(n)} tokens instead (IMDb's own lengths; "
        f"chapter 9), same commit and settings:</p>" + table(ans["long"])
    )


def artefacts(ans) -> str:
    out = []
    if "memory" in ans:
        m = ans["memory"]
        fresh = ", ".join(f"{v} {p:,.0f}" for v, p in zip(PAPER_ORDER, m["fresh_peaks_mb"]))
        out.append(
            f"<i>Memory.</i> Run in the paper's order in one process that keeps each run's model, gradients and "
            f"optimizer, the peak grows {m['kept_growth_mb']:,.0f} MB a run; the paper's column grows "
            f"{m['paper_growth_mb']:,.0f} MB a run, in the same order. Each in a fresh process: {fresh} MB "
            f"(DistilBERT-base's shape, random weights)."
        )
    rows = [r for r in ans.get("bench", []) if "distilbert" in r["model"].lower() and r["max_length"] == 128]
    if rows:
        model = rows[0]["model"]
        eager, whole = spread(rows, model, 128, "eager"), spread(rows, model, 128, "whole")
        paper = PAPER["train_time_s"].max() / PAPER["train_time_s"].min()
        verdict = "do not flatten" if eager >= whole else "flatten"
        out.append(
            f"<i>Time.</i> The paper's four times lie within {100 * (paper - 1):.1f}% of each other. Here, at "
            f"DistilBERT-base's shape and 128 tokens, the slowest of the four steps takes {eager:.2f}\u00d7 the "
            f"fastest when eager and {whole:.2f}\u00d7 when captured whole: eager steps {verdict} the differences."
        )
    out += accuracy_arms(ans)
    items = "".join(f"<li>{x}</li>" for x in out)
    return f"<p><b>The paper's numbers, put to the test.</b></p><ul class='answer-tests'>{items}</ul>"


def accuracy_arms(ans) -> list[str]:
    """The fp16 and attention-dropout arms: flash minus baseline within each, how far each moved a
    variant, and the largest move against the paper's flash loss."""
    paper = 100 * (PAPER.loc["flash", "accuracy"] - PAPER.loc["baseline", "accuracy"])
    out = []
    for arm, what in ARM_WORDS.items():
        if arm not in ans:
            out.append(f"<i>Accuracy, {what}.</i> Not yet run at this commit.")
            continue
        a = ans[arm]
        if "flash_minus_baseline_arm_pts" in a:  # both variants ran in the arm
            gap = f"flash minus baseline is {interval_pts(a, 'flash_minus_baseline_arm')} points under it"
        else:  # the arm changed the baseline only, as the paper's variants differed
            gap = f"flash as run minus the baseline with it is {interval_pts(a, 'flash_minus_arm_baseline')} points"
        n = a["baseline_change_pairs"]
        main = f"{pts(a['flash_minus_baseline_main_pts'])} in the main runs (bf16, no dropout) of the same {n} seeds"
        moved = " and ".join(
            f"{v} by {pts(a[f'{v}_change_pts'])}" for v in ("baseline", "flash") if f"{v}_change_pts" in a
        )
        out.append(f"<i>Accuracy, {what}.</i> {gap.capitalize()}, against {main}; it moves {moved} points.")
    if all(arm in ans for arm in ARM_WORDS):
        largest = max(ans[arm]["largest_move_pts"] for arm in ARM_WORDS)
        verdict = "neither explains it" if largest < abs(paper) / 2 else "one of them moves accuracy by as much as it"
        out.append(
            f"The largest move in either arm is {largest:.2f} points; the paper's flash loss is {pts(paper)} "
            f"points: {verdict}."
        )
    return out


def render(ans) -> str:
    """The box: its setup in one sentence, the table, and what is free, where each pays, the artefacts."""
    s = ans["setup"]
    intro = (
        f"IMDb at {s['max_length']} tokens, batch {s['batch_size']}, {s['epochs']} epochs of AdamW at lr {s['lr']}, "
        f"with "
        f"{escape(stand_in(s['model']))}; seeds paired across variants; the whole training step captured as "
        f"one CUDA graph ({escape(s['step_mode'])}, {escape(s['precision'])}); one {escape(s['device'])}, "
        f"commit {', '.join(f'<code>{escape(x[:7])}</code>' for x in s['git_sha'].split(', '))}."
    )
    parts = [intro, table(ans), for_free(ans), pays(ans), artefacts(ans)]
    body = "".join(p if p.startswith(("<table", "<p>")) else f"<p>{p}</p>" for p in parts)
    return f"<div class='answer-box'><p class='answer-title'>The answer</p>{body}</div>"
