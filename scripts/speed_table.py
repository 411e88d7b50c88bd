"""Two campaign folders' runs side by side (issue 38): end-to-end wall and its parts, run for run.

    python scripts/speed_table.py BASE NEW

For every (length, arm, variant, seed) in both folders: each one's end-to-end seconds, its parts
(start, waiting, data, model, compile, steps, evaluation, saving, other), the ratio of end to end to
training without compile (issue 38's target 2: at most 2.0 once the caches are warm), the GPU-busy
seconds by part where the record has them (NVML samples), and whether the accuracy is the same. A
script, not a CLI command: it reads one measurement's folders.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from attnpaper.training.clock import PARTS as NAMED  # noqa: E402

PARTS = (*NAMED, "other")  # the parts a record's time_parts_s holds, in a run's order


def runs(root: Path) -> dict:
    """(folder, variant, seed) -> record, for every ok record under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.json")):
        if "records" not in path.parts:
            continue
        rec = json.loads(path.read_text())
        if rec.get("status") == "ok" and "variant" in rec:
            folder = str(path.parent.relative_to(root))
            out[folder, rec["variant"], rec["seed"]] = rec
    return out


def row(tag: str, rec: dict) -> str:
    parts = rec.get("time_parts_s") or {}
    steps = rec.get("train_time_excl_compile_s") or float("nan")
    e2e = rec.get("end_to_end_s")
    cells = " ".join(f"{parts.get(p, float('nan')):7.1f}" for p in PARTS)
    ratio = f"{e2e / steps:5.2f}" if e2e is not None else "    -"
    e2e_s = f"{e2e:7.1f}" if e2e is not None else "      -"
    line = f"  {tag:4s} {e2e_s} {cells} {ratio}  acc {rec.get('accuracy')}"
    busy = rec.get("gpu_busy_s")  # NVML samples by part; training is compile and steps together
    if busy:
        line += "\n  " + " " * 13 + "GPU busy s: " + ", ".join(f"{k} {v:.1f}" for k, v in busy.items())
    return line


def main(argv) -> int:
    if len(argv) == 1:  # one folder: its runs, one row each (a call that ran one tree only)
        return one_folder(Path(argv[0]))
    if len(argv) != 2:
        print("usage: python scripts/speed_table.py BASE NEW (two campaign folders), or FOLDER", file=sys.stderr)
        return 2
    base, new = (runs(Path(a)) for a in argv)
    keys = sorted(set(base) & set(new), key=str)
    if not keys:
        print(f"no run is in both folders ({len(base)} in {argv[0]}, {len(new)} in {argv[1]})", file=sys.stderr)
        return 1
    print(f"{'':6s}{'e2e s':>7s} " + " ".join(f"{p[:7]:>7s}" for p in PARTS) + "  e2e/steps")
    for key in keys:
        b, n = base[key], new[key]
        same = "same accuracy" if b.get("accuracy") == n.get("accuracy") else "ACCURACY DIFFERS"
        print(f"{key[0]} {key[1]} seed {key[2]} ({b.get('device')}; {same})")
        print(row("base", b))
        print(row("new", n))
    return 0


def one_folder(root: Path) -> int:
    found = runs(root)
    if not found:
        print(f"no ok record under {root}", file=sys.stderr)
        return 1
    print(f"{'':6s}{'e2e s':>7s} " + " ".join(f"{p[:7]:>7s}" for p in PARTS) + "  e2e/steps")
    for key in sorted(found, key=str):
        rec = found[key]
        kernel_run = rec.get("runs_before_in_process", 0) + 1
        print(f"{key[0]} {key[1]} seed {key[2]} ({rec.get('device')}; run {kernel_run} of its kernel)")
        print(row("", rec))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
