"""What ran: the shared setup of a set of records, the executed run notebooks, the kernels per layer."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def run_setup(records: pd.DataFrame) -> pd.Series:
    """Where and with what the records ran: device, versions, model, configuration, data, schedule, commits.

    Refuses records of more than one configuration or with failed runs: one line must describe them all.
    """
    hashes = records["config_hash"].unique()
    if len(hashes) != 1:
        raise ValueError(
            f"records of {len(hashes)} configurations ({', '.join(map(str, hashes))}); "
            "one setup describes one configuration"
        )
    failed = int((records["status"] != "ok").sum())
    if failed:
        raise ValueError(f"{failed} failed runs among the records; the setup describes successful runs only")
    v, r0 = records.iloc[0]["versions"], records.iloc[0]
    return pd.Series(
        {
            "device": ", ".join(records.device.unique()),
            "torch / transformers / CUDA": f"{v['torch']} / {v['transformers']} / {v.get('cuda')}",
            "model": ", ".join(records.model.unique()),
            "config hash": ", ".join(hashes),
            "precision": ", ".join(records.precision.unique()),
            "train / test reviews": f"{r0.train_samples:,} / {r0.test_samples:,}",
            "max_length / batch / epochs": f"{r0.max_length} / {r0.batch_size} / {r0.epochs:g}",
            "lr / schedule / warm-up / weight decay": (
                f"{r0.lr:g} / {r0.schedule} / {r0.warmup_ratio:g} / {r0.weight_decay:g}"
            ),
            "git commits": ", ".join(sorted(records.git_sha.str[:8].unique())),
        },
        name="",
    )


def executed_notebooks(folder) -> pd.DataFrame:
    """One row per executed run notebook (papermill) in ``folder``: variant, seed, wall seconds from
    kernel start to end, and how many runs shared the GPU."""
    import nbformat

    rows = []
    for path in sorted(Path(folder).glob("*.ipynb")):
        meta = nbformat.read(path, as_version=4).metadata.get("papermill")
        if not meta or "parameters" not in meta:
            raise ValueError(f"{path} was not executed by papermill (no papermill metadata)")
        params = meta["parameters"]
        rows.append(
            {
                "notebook": path.name,
                "variant": params["variant"],
                "seed": params["seed"],
                "wall s": round(meta["duration"], 1),
                "concurrent": params.get("notes", {}).get("concurrent_runs", 1),
            }
        )
    if not rows:
        raise ValueError(f"no executed notebooks (*.ipynb) in {folder}")
    return pd.DataFrame(rows).sort_values(["variant", "seed"]).set_index("notebook")


def layer_spans(kernels) -> list[tuple[str, str]]:
    """[('0-2', 'a'), ('3-5', 'b, c')]: runs of consecutive layers that ran the same kernels.

    ``kernels`` holds one list of kernel names per layer, as a record's ``kernels`` field does.
    """
    names = [", ".join(k) for k in kernels]
    out, start = [], 0
    for i in range(1, len(names) + 1):
        if i == len(names) or names[i] != names[start]:
            out.append((f"{start}" if i - 1 == start else f"{start}-{i - 1}", names[start]))
            start = i
    return out


def layer_runs(kernels) -> str:
    """'layers 0-2: a; layers 3-5: b': ``layer_spans`` in one line."""
    return "; ".join(f"layers {span}: {names}" for span, names in layer_spans(kernels))


def kernel_table(kernels_by_variant: dict) -> pd.DataFrame:
    """One row per variant and run of layers with the same kernels, each kernel name in full."""
    rows = [
        {"variant": variant, "layers": span, "kernels": names}
        for variant, kernels in kernels_by_variant.items()
        for span, names in layer_spans(kernels)
    ]
    return pd.DataFrame(rows, columns=["variant", "layers", "kernels"]).set_index(["variant", "layers"])
