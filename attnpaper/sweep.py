"""Run the experiment notebook once per (variant, seed) with papermill, each in its own kernel process."""
from __future__ import annotations

import json
import time
from pathlib import Path

from .config import SMOKE, RunConfig
from .records import new_record, read_record, record_name, write_record

NOTEBOOK = Path(__file__).resolve().parent.parent / "chapters" / "07_experiment.ipynb"


def plan(variants, seeds, overrides=None, smoke=False) -> list[RunConfig]:
    """Validated configurations for every (variant, seed); raises before anything runs."""
    base = {**(SMOKE if smoke else {}), **(overrides or {})}
    configs = [RunConfig.from_dict({**base, "variant": v, "seed": s}).validate() for v in variants for s in seeds]
    if not configs:
        raise ValueError("nothing to run: give at least one variant and one seed")
    return configs


def sweep(variants, seeds, out, overrides=None, smoke=False, force=False, notebook=NOTEBOOK,
          kernel_name=None, log=print) -> list[dict]:
    """Execute ``notebook`` for each configuration; records go to out/records, notebooks to out/notebooks.

    A run whose record exists with status ok is skipped unless force. A failed run is recorded as
    failed with its error, and the sweep goes on. Returns one summary dict per run.
    """
    import papermill as pm

    out = Path(out)
    summary = []
    for cfg in plan(variants, seeds, overrides, smoke):
        rec_path = out / "records" / record_name(cfg)
        nb_path = out / "notebooks" / rec_path.with_suffix(".ipynb").name
        if rec_path.exists() and not force and read_record(rec_path)["status"] == "ok":
            log(f"skip {rec_path.name}: already recorded (use --force to rerun)")
            summary.append({"record": str(rec_path), "status": "skipped"})
            continue
        params = {**cfg.to_dict(), "smoke": False, "output_dir": str((out / "records").resolve())}
        log(f"run  {cfg.variant} seed {cfg.seed} -> {nb_path}")
        t0 = time.perf_counter()
        nb_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            pm.execute_notebook(str(notebook), str(nb_path), parameters=params, kernel_name=kernel_name,
                                progress_bar=False)  # the kernel runs in this cwd: relative paths hold
            status = read_record(rec_path)["status"]
        except Exception as err:  # the run failed: keep its error, go on with the next
            status = "failed"
            _record_failure(cfg, rec_path, err)
            log(f"FAILED {cfg.variant} seed {cfg.seed}: {str(err).strip().splitlines()[-1] if str(err).strip() else err}")
        summary.append({"record": str(rec_path), "notebook": str(nb_path), "status": status,
                        "wall_s": round(time.perf_counter() - t0, 1)})
    return summary


def _record_failure(cfg, rec_path, err):
    """Keep the notebook's own failed record if it wrote one; otherwise write one from the error."""
    if rec_path.exists():
        try:
            if read_record(rec_path)["status"] == "failed":
                return
        except (ValueError, json.JSONDecodeError):
            pass
    rec = new_record(cfg)
    rec.update(status="failed", error=f"{type(err).__name__}: {err}"[-2000:])
    write_record(rec, rec_path)
