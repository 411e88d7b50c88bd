"""The book's answer in numbers, computed once from one results folder (the published set, ``PUBLISHED``).

Four parts, each from the files that measured it: what each variant changes at the paper's setup
(accuracy difference, training time and peak memory as ratios to the baseline, paired over seeds;
``effects``), the step benchmark's view of the same (``step_ratios``), the lengths from which each
mechanism pays (``pays_from``) with the same runs at IMDb's own 512 tokens (``LONG``), and what the
paper's artefact tests found (``artefacts``). Chapter 1 and the discussion glue these values; nothing here
is typed in.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from ..files import checkout_root
from ..variants import PAPER_ORDER, in_order
from . import scaling as S
from .results import (
    GROUP,
    PAPER,
    load_records,
    paired_frame,
    paired_points,
    paired_vs_baseline,
    ratios_by_variant,
    summarise,
)
from .steps import step_table

ARMS = ("fp16", "dropout")
"""The accuracy arms (issue 20, 5c), each a folder under artefacts/: precision fp16, attention dropout 0.1."""
VARIANT_ARMS = {"nomask": "flash", "elu": "linear", "favor4x": "linear"}
"""Issue 39's accuracy arms, each a folder under artefacts/ holding one variant run another way, and that
variant, whose main runs of the same seeds each arm is paired with: flash on padded batches attending its
padding (flash_backend nomask), linear with the elu+1 feature map, linear with 4 x FAVOR+'s features."""
PAIRED_COLUMNS = [
    *("pairs", "acc_pts", "acc_low", "acc_high", "time_ratio", "time_low", "time_high"),
    *("compiled_ratio", "compiled_low", "compiled_high", "mem_ratio", "mem_low", "mem_high"),
    *("e2e_ratio", "e2e_low", "e2e_high"),
]
"""paired_effects' fields: ``effects``' columns, then the end-to-end time's ratio and its interval."""
ARM_AGAINST = {"vs_main": "against {variant} (main runs)", "vs_baseline": "against baseline (main runs)"}
"""variant_arm's comparisons and how variant_arm_table labels them."""
LONG = "len512"
"""The folder of the same runs with reviews cut at 512 tokens (IMDb's own lengths) instead of 128."""
T4_SETUP = "bench-t4"
"""The folder of the benchmark in the setup a T4 user had (bench --setup t4; issue 39's time column)."""
COMPARISONS = {
    "flash_minus_baseline_main": "flash - baseline, main runs (bf16, no dropout)",
    "flash_minus_baseline_arm": "flash - baseline, both in the arm",
    "flash_minus_arm_baseline": "flash (main runs) - baseline (arm)",
    "baseline_change": "baseline: arm - main runs",
    "flash_change": "flash: arm - main runs",
}
"""accuracy_artefact's comparisons, in the order a table shows them."""


def one_configuration(records: pd.DataFrame, where: str) -> pd.DataFrame:
    """The records, refused unless they are one configuration on one device (a paired answer needs that)."""
    groups = records[GROUP].drop_duplicates()
    if len(groups) != 1:
        raise ValueError(f"{where}: records of {len(groups)} configurations/devices; the answer pairs within one")
    return records


def effects(records: pd.DataFrame) -> pd.DataFrame:
    """Per variant against the baseline: accuracy difference (points), training time without compile
    (``time``) and with it (``compiled``) and peak memory as ratios, each with its paired 95% interval and
    the number of seed pairs."""
    acc = paired_vs_baseline(records)
    columns = ["variant", "n_pairs", "diff_mean", "ci_low", "ci_high"]  # none where no variant pairs
    acc = (acc if len(acc) else pd.DataFrame(columns=columns)).set_index("variant")
    time, compiled, mem = (
        ratios_by_variant(records, m).reindex(acc.index)
        for m in ("train_time_excl_compile_s", "train_time_s", "peak_memory_mb")
    )
    out = pd.DataFrame(
        {
            "pairs": acc["n_pairs"],
            "acc_pts": 100 * acc["diff_mean"],
            "acc_low": 100 * acc["ci_low"],
            "acc_high": 100 * acc["ci_high"],
            "time_ratio": time["ratio"],
            "time_low": time["ci_low"],
            "time_high": time["ci_high"],
            "compiled_ratio": compiled["ratio"],  # training time with compile and graph recording
            "compiled_low": compiled["ci_low"],
            "compiled_high": compiled["ci_high"],
            "mem_ratio": mem["ratio"],
            "mem_low": mem["ci_low"],
            "mem_high": mem["ci_high"],
        }
    )
    return out


def bench_rows(folder) -> list[dict]:
    """Every row of the step-benchmark reports in ``folder`` (bench-*.json), each tagged with its file's commit."""
    rows = []
    for path in sorted(Path(folder).glob("bench-*.json")):
        report = json.loads(path.read_text())
        rows += [r | {"file": path.name} for r in report["rows"]]
    if not rows:
        raise ValueError(f"no step benchmark (bench-*.json) in {folder}")
    return rows


def step_ratios(rows, model, length, mode="whole") -> pd.DataFrame:
    """Median wall and GPU-busy ms and peak MB per variant at one (model, length, step mode), and each as
    a ratio to the baseline's, with transformers' own model under reduce-overhead as ``stock``."""
    keep = [r for r in rows if r["model"] == model and r["max_length"] == length]
    ours = step_table(
        [r for r in keep if r["step_mode"] == mode and r["variant"] != "transformers"],
        ["variant"],
        ("wall_ms", "busy_ms", "peak_mb"),
        ref="baseline",
    )
    stock = [r for r in keep if r["variant"] == "transformers" and r["step_mode"] == "reduce-overhead"]
    if stock:
        ours.loc["stock"] = step_table(stock, ["variant"], ("wall_ms", "busy_ms", "peak_mb")).iloc[0]
    return ours


def spread(rows, model, length, mode, variants=PAPER_ORDER) -> float:
    """Slowest over fastest median wall time of ``variants`` at one (model, length, step mode)."""
    keep = [
        r
        for r in rows
        if r["model"] == model and r["max_length"] == length and r["step_mode"] == mode and r["variant"] in variants
    ]
    wall = step_table(keep, ["variant"], ("wall_ms",))["wall_ms"]
    if len(wall) != len(variants):
        raise ValueError(f"{model} at {length} in {mode}: measured {sorted(wall.index)}, need {variants}")
    return float(wall.max() / wall.min())


def t4_setup(rows, length=128) -> dict:
    """The eager steps of the setup a T4 user had (``bench --setup t4`` rows, DistilBERT-base's shape):
    ``steps`` (step_ratios: median wall and GPU-busy ms and peak MB per variant, and their ratios to the
    baseline's) and ``spread`` (the paper's four variants' slowest median wall over their fastest), the figure
    to set beside the paper's 0.8%. ValueError naming the file of a row from another setup."""
    other = sorted({r.get("file", "?") for r in rows if r.get("setup") != "t4"})
    if other:
        raise ValueError(f"{T4_SETUP}/ holds rows of another setup than t4: {', '.join(other)}")
    rows = [r | {"model": "DistilBERT"} for r in rows]
    return {
        "steps": step_ratios(rows, "DistilBERT", length, "eager"),
        "spread": spread(rows, "DistilBERT", length, "eager"),
    }


def pays_from(
    kernels: dict, model: dict | None = None, exact=("sdpa-flash", "sdpa-cudnn", "varlen"), linear=("elu", "favor+266")
):
    """Crossover lengths (None: not within the measured lengths): each linear mechanism's kernel against
    the fastest exact kernel (forward + backward), and, given a model report, the whole step's
    (``scaling.step_crossovers``) with ``step_unrecorded``: the lengths a variant's step has no row at."""
    ms = S.table(kernels, "ms", "mechanism", "fwd_bwd")
    exact = [m for m in exact if m in ms]
    best = ms[exact].min(axis=1)
    out = {f"kernel_{m.replace('+', '')}": S.crossover(ms[m], best) for m in linear if m in ms}
    if model is not None:
        wall, peak = S.table(model, "step_time_ms_median", "variant"), S.table(model, "peak_memory_mb", "variant")
        missing = S.unrecorded(model)
        out |= {f"step_{k}": v for k, v in S.step_crossovers(wall, peak, missing=missing).items()}
        if missing:
            out["step_unrecorded"] = missing
        fp32 = S.without_tf32(model)
        if fp32:
            out["step_without_tf32"] = fp32
    return out


def memory_artefact(report: dict) -> dict:
    """The paper's memory column against the two ways of measuring it: the mean growth of the peak from
    one variant to the next when all are kept in one process, the paper's steps, and the spread of the
    fresh processes' peaks (largest over smallest)."""
    rows = pd.DataFrame(report["rows"])
    kept = rows[rows["arm"] == "kept"].set_index("variant").reindex(PAPER_ORDER)
    fresh = rows[rows["arm"] == "fresh"].set_index("variant").reindex(PAPER_ORDER)
    paper = PAPER["peak_memory_mb"].reindex(PAPER_ORDER)
    return {
        "kept_growth_mb": float(kept["growth_mb"].iloc[1:].mean()),
        "paper_growth_mb": float(paper.diff().iloc[1:].mean()),
        "kept_peaks_mb": kept["peak_memory_mb"].tolist(),
        "fresh_peaks_mb": fresh["peak_memory_mb"].tolist(),
        "fresh_spread": float(fresh["peak_memory_mb"].max() / fresh["peak_memory_mb"].min()),
    }


def accuracy_artefact(main: pd.DataFrame, arm: pd.DataFrame) -> dict:
    """One arm (fp16 or attention dropout) beside the paper's setup, over the arm's seeds only: the
    flash-minus-baseline difference in each (where both variants ran), flash as run minus the arm's
    baseline (the paper's pairing when the arm changed the baseline alone), each variant's change from
    the main runs to the arm's, all in points with 95% intervals, and the largest of the arm's moves."""

    seeds = set(arm.loc[arm["status"] == "ok", "seed"])

    def by_variant(recs) -> dict:  # variant -> accuracy by seed: evaluated ok runs of the arm's seeds only
        ok = recs[(recs["status"] == "ok") & recs["accuracy"].notna() & recs["seed"].isin(seeds)]
        return {v: g.set_index("seed")["accuracy"] for v, g in ok.groupby("variant")}

    acc = {"main": by_variant(main), "arm": by_variant(arm)}
    main_, arm_ = acc["main"], acc["arm"]
    found = {}
    for name in ("main", "arm"):
        if {"flash", "baseline"} <= set(acc[name]):
            found[f"flash_minus_baseline_{name}"] = paired_points(acc[name]["flash"], acc[name]["baseline"])
    if "baseline" in arm_ and "flash" not in arm_ and "flash" in main_:
        found["flash_minus_arm_baseline"] = paired_points(main_["flash"], arm_["baseline"])
    for v in in_order(set(arm_) & set(main_)):
        found[f"{v}_change"] = paired_points(arm_[v], main_[v])
    out = {f"{k}_{f}": v for k, d in found.items() for f, v in d.items()}
    moves = [abs(d["pts"]) for k, d in found.items() if k != "flash_minus_baseline_main"]
    if moves:
        out["largest_move_pts"] = max(moves)
    return out


def paired_effects(reference: pd.DataFrame, runs: pd.DataFrame, variant: str) -> pd.Series:
    """``effects``' row of ``variant``'s records in ``runs`` against ``reference``'s records, paired by seed
    (results.paired_frame: the reference stands as the baseline), with the end-to-end time's ratio beside
    (``e2e_ratio``, ``e2e_low``, ``e2e_high``). NaN (pairs 0) where either side has no successful run."""
    runs = runs[runs["variant"] == variant]
    out = pd.Series(float("nan"), index=PAIRED_COLUMNS, name=variant)
    if not (reference["status"] == "ok").any():  # nothing to pair with (effects would refuse)
        return out.fillna({"pairs": 0})
    both = paired_frame(reference, runs)
    found = effects(both)
    if variant in found.index:
        out[found.columns] = found.loc[variant].astype(float)
    e2e = ratios_by_variant(both, "end_to_end_s")
    if variant in e2e.index:
        out[["e2e_ratio", "e2e_low", "e2e_high"]] = e2e.loc[variant, ["ratio", "ci_low", "ci_high"]].astype(float)
    return out.fillna({"pairs": 0})


def variant_arm(main: pd.DataFrame, arm: pd.DataFrame, variant: str) -> pd.DataFrame:
    """One of issue 39's arms (VARIANT_ARMS) against the main runs, as ``effects`` sets a variant against the
    baseline (accuracy points, times and memory as ratios, each with its paired 95% interval and pairs):
    ``vs_main``, the arm's ``variant`` against the main runs of ``variant`` of the same seeds (what the arm
    changes), and ``vs_baseline``, against the main runs' baseline (the arm's row of the main table)."""
    rows = [
        paired_effects(main[main["variant"] == variant], arm, variant).rename("vs_main"),
        paired_effects(main[main["variant"] == "baseline"], arm, variant).rename("vs_baseline"),
    ]
    return pd.DataFrame(rows).rename_axis("comparison")


def setup(records: pd.DataFrame) -> dict:
    """What the records have in common and the box says beside its numbers: one value per field, or all
    of them joined (so a mixed folder shows as mixed, not as one commit)."""
    fields = ("git_sha", "device", "model", "max_length", "batch_size", "epochs", "lr", "step_mode", "precision")
    values = {f: sorted({str(v) for v in records[f].dropna()}) if f in records else [] for f in fields}
    return {f: ", ".join(v) or "not recorded" for f, v in values.items()}


def beside(main: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """The records under ``folder``, refused unless they are one configuration and ran at the main runs'
    commit (the box compares runs of one commit)."""
    records = one_configuration(load_records(folder), f"{folder}")
    if set(records["git_sha"]) != set(main["git_sha"]):
        raise ValueError(
            f"{folder}: commit {', '.join(sorted(set(records['git_sha'])))}, the main runs "
            f"{', '.join(sorted(set(main['git_sha'])))}; the box compares runs of one commit"
        )
    return records


def baseline_figures(records: pd.DataFrame) -> dict:
    """The baseline's own accuracy, training time (compile excluded) and peak memory, as the results
    table shows them, with its number of successful runs."""
    base = summarise(records).set_index("variant").loc["baseline"]
    return {
        "accuracy": float(base["acc_mean"]),
        "train_s": float(base["train_time_excl_compile_s"]),
        "train_compiled_s": float(base["train_time_s"]),
        "peak_mb": float(base["peak_memory_mb"]),
        "seeds": int(base["n"]),  # successful runs, one per seed
    }


PUBLISHED = Path("results") / "h200"
"""The published set, relative to the checkout: the one results folder the book, the README and the tests
read. A set is one card kind's (issue 39): a campaign on another card writes results/<card> beside it, and
once it is complete this names that folder instead and the superseded set is removed."""


def published() -> Path:
    """The published set's folder in this checkout."""
    return checkout_root() / PUBLISHED


def card_of(devices) -> str:
    """The one card the device names (records' ``device``) are, by its model: "NVIDIA H100 80GB HBM3" is
    "H100"; ValueError where they name several cards, or none that looks like one."""
    names = sorted({str(d) for d in devices})
    cards = {m.group(1) if (m := re.search(r"\b([A-Z]\d{2,3})\b", d)) else None for d in names}
    if len(cards) != 1 or None in cards:
        raise ValueError(f"one card expected, the records name {names}")
    return cards.pop()


def load(root=None) -> dict:
    """Everything the answer box shows, from ``root`` (default: the published set): what is missing is left
    out, never filled in."""
    root = Path(root) if root is not None else published()
    main = one_configuration(load_records(root), f"{root}")
    out = {"effects": effects(main), "n_seeds": int(main.groupby("variant")["seed"].nunique().min())}
    out["setup"] = setup(main)
    if "baseline" in set(main["variant"]):
        out["baseline"] = baseline_figures(main)
    if (root / "bench").is_dir():
        out["bench"] = bench_rows(root / "bench")
    if (root / "scaling-kernels.json").exists():
        model = root / "scaling-model.json"
        out["pays_from"] = pays_from(S.load(root / "scaling-kernels.json"), S.load(model) if model.exists() else None)
    if (root / LONG).is_dir():  # the same runs at IMDb's own length
        records = beside(main, root / LONG)
        out["long"] = {"effects": effects(records), "setup": setup(records)}
        if "baseline" in set(records["variant"]):
            out["long"]["baseline"] = baseline_figures(records)
    if (root / "artefacts" / "paper-memory.json").exists():
        out["memory"] = memory_artefact(json.loads((root / "artefacts" / "paper-memory.json").read_text()))
    for arm in ARMS:
        if (root / "artefacts" / arm).is_dir():
            out[arm] = accuracy_artefact(main, beside(main, root / "artefacts" / arm))
    return out | issue39(root, main)


def issue39(root: Path, main: pd.DataFrame) -> dict:
    """What issue 39 added, each where its files are (left out where not: ``variant_arms`` and
    ``memory.load_memory_cases`` say which are not run): the arms of VARIANT_ARMS, each ``{"variant",
    "effects": variant_arm's frame, "setup"}``; ``trainer`` (trainer.trainer_row); ``memory_cases``
    (memory.memory_cases, where paper-memory.json has the cases section); ``t4_setup`` (``t4_setup``, where
    bench-t4/ is)."""
    from .memory import load_memory_cases
    from .trainer import load_trainer, trainer_folder

    out = {}
    for arm, variant in VARIANT_ARMS.items():
        if (root / "artefacts" / arm).is_dir():
            records = beside(main, root / "artefacts" / arm)
            out[arm] = {"variant": variant, "effects": variant_arm(main, records, variant), "setup": setup(records)}
    if trainer_folder(root):
        out["trainer"] = trainer_row(main, load_trainer(trainer_folder(root)))
    cases = load_memory_cases(root)
    if cases is not None:
        out["memory_cases"] = cases
    if (root / T4_SETUP).is_dir():
        out["t4_setup"] = t4_setup(bench_rows(root / T4_SETUP))
    return out


def trainer_row(main: pd.DataFrame, trainer: pd.DataFrame) -> dict:
    """The Trainer reference (trainer.load_trainer's records) beside the main runs: ``figures``
    (trainer.trainer_figures: its own accuracy, times and peak memory), ``vs_baseline`` (``paired_effects``
    against the main runs' baseline: accuracy points, training time against the baseline's without compile
    (``time``) and with it (``compiled``), peak memory and end to end as ratios, each with its paired 95%
    interval over the seeds both ran) and ``setup`` (its records' commit, device, model...)."""
    from .trainer import TRAINER, trainer_figures

    return {
        "figures": trainer_figures(trainer),
        "vs_baseline": paired_effects(main[main["variant"] == "baseline"], trainer, TRAINER),
        "setup": setup(trainer),
    }


NOT_RUN = None
"""variant_arms' word for an arm whose folder is not in the results (not yet run at this commit)."""


def variant_arms(ans) -> dict:
    """Each of VARIANT_ARMS, in that order: ``load``'s entry for it, or NOT_RUN (None) where it did not run."""
    return {arm: ans.get(arm, NOT_RUN) for arm in VARIANT_ARMS}


def variant_arm_table(ans) -> pd.DataFrame:
    """Issue 39's arms that ran as rows (arm, comparison): each against the main runs of its variant and
    against their baseline, in ``paired_effects``' columns; empty where none ran (``variant_arms`` says)."""
    frames = {
        arm: found["effects"].rename(index=lambda k, v=found["variant"]: ARM_AGAINST[k].format(variant=v))
        for arm, found in variant_arms(ans).items()
        if found is not NOT_RUN
    }
    return pd.concat(frames, names=["arm", "comparison"]) if frames else pd.DataFrame()


def arm_table(ans) -> pd.DataFrame:
    """The accuracy arms' comparisons as rows (arm, comparison): seed pairs, mean points, 95% interval."""
    rows = [
        {
            "arm": arm,
            "comparison": label,
            "seeds": ans[arm][f"{key}_pairs"],
            "points": ans[arm][f"{key}_pts"],
            "low": ans[arm][f"{key}_low"],
            "high": ans[arm][f"{key}_high"],
        }
        for arm in ARMS
        if arm in ans
        for key, label in COMPARISONS.items()
        if f"{key}_pts" in ans[arm]
    ]
    return pd.DataFrame(rows).set_index(["arm", "comparison"]) if rows else pd.DataFrame()


def shape_steps(ans, length: int) -> pd.DataFrame | None:
    """The whole step at DistilBERT-base's shape (random weights, the benchmark) at ``length``: each
    variant's wall time and peak memory as ratios to the baseline's; None where not benchmarked."""
    rows = [r for r in ans.get("bench", []) if "distilbert" in r["model"].lower() and r["max_length"] == length]
    if not rows:
        return None
    return step_ratios(rows, rows[0]["model"], length).drop(index="stock", errors="ignore")


def whole_vs_stock(rows) -> pd.DataFrame:
    """Per (model, length): the book's whole sdpa step against transformers' own model under
    ``torch.compile(mode="reduce-overhead")``, wall and busy ms, and how many times as fast ours is."""
    out = {}
    for model, length in sorted({(r["model"], r["max_length"]) for r in rows}):
        t = step_ratios(rows, model, length)
        if {"sdpa", "stock"} <= set(t.index):
            ours, stock = t.loc["sdpa"], t.loc["stock"]
            out[(model, length)] = {
                "whole_ms": ours["wall_ms"],
                "whole_busy_ms": ours["busy_ms"],
                "stock_ms": stock["wall_ms"],
                "stock_busy_ms": stock["busy_ms"],
                "stock_over_whole": stock["wall_ms"] / ours["wall_ms"],
                "stock_wall_over_busy": stock["wall_ms"] / stock["busy_ms"],
            }
    return pd.DataFrame.from_dict(out, orient="index").rename_axis(["model", "N"])
