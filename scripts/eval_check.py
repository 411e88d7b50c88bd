"""Where a run's evaluation of the 25,000 test reviews spends its time, and what would change it (issue 38,
target 4: at most 2 s at 128 tokens, the same accuracy run for run). A diagnostic for a GPU call:

    python scripts/eval_check.py --model bundle/all-MiniLM-L6-v2-fp16 --data bundle/imdb-512.npz \\
        --variants sdpa linear --out $OUT/eval-check.json

Per variant, on one model (the stand-in's weights, the classifier head drawn with seed 0: untrained, so the
accuracies mean nothing; the agreement of the predictions does): ``evaluate`` as the runs call it, twice
(its first call loads kernels), wall and GPU-busy seconds; its CUDA time by op (torch.profiler); then the
same logits two other ways, against ``evaluate``'s batches: batches of 512 reviews, and each layer compiled
by Inductor with symbolic sizes (as the whole step compiles them, here for inference; first call, with the
compile, and second). For each: wall seconds, predictions that differ, largest logit difference.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from attnpaper.experiment.records import git_sha  # noqa: E402
from attnpaper.training import loop  # noqa: E402
from attnpaper.training.clock import Clock  # noqa: E402
from attnpaper.training.config import RunConfig  # noqa: E402
from attnpaper.training.step import compiled_calls, regional_layers  # noqa: E402


def logits_of(model, split, cfg, device, precision, pad_id) -> tuple[torch.Tensor, float]:
    """Every real row's logits in ``evaluate``'s order (dummy rows left out) and the wall seconds."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    batches = loop.eval_batches(model, split, cfg, device, precision, pad_id)
    rows = [lg[b["labels"] != -100].float() for b, lg in batches]
    sync()
    return torch.cat(rows), time.perf_counter() - t0


def timed_evaluate(model, split, cfg, device, precision, pad_id) -> dict:
    clock = Clock(launched=time.time())
    clock.watch(device)
    with clock.part("evaluation"):
        acc = loop.evaluate(model, split, cfg, device, precision, pad_id)
    out = clock.stop()
    return {
        "accuracy": acc,
        "wall_s": out["time_parts_s"]["evaluation"],
        "gpu_busy_s": (out.get("gpu_busy_s") or {}).get("evaluation"),
    }


def compare(ref: torch.Tensor, other: torch.Tensor) -> dict:
    return {
        "predictions_differ": int((ref.argmax(-1) != other.argmax(-1)).sum()),
        "max_abs_logit_diff": float((ref - other).abs().max()),
    }


def op_table(model, split, cfg, device, precision, pad_id, rows=15) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        loop.evaluate(model, split, cfg, device, precision, pad_id)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def check(variant: str, args, device) -> dict:
    cfg = RunConfig.from_parameters(
        {"variant": variant, "model": args.model, "data": args.data, "max_length": args.max_length}
        | ({"test_samples": args.test_samples, "train_samples": 64} if args.test_samples else {}),
        smoke=args.smoke,
    )
    torch.manual_seed(0)
    model, splits, pad_id = loop.prepare(cfg)
    model.to(device)
    split, precision = splits["test"], loop.precision_of(cfg, device)
    out = {"variant": variant, "reviews": len(split), "eval_batch_size": cfg.eval_batch_size, "precision": precision}
    out["evaluate"] = [timed_evaluate(model, split, cfg, device, precision, pad_id) for _ in range(2)]
    out["op_table"] = op_table(model, split, cfg, device, precision, pad_id)
    ref, out["logits_s"] = logits_of(model, split, cfg, device, precision, pad_id)
    big = dataclasses.replace(cfg, eval_batch_size=512)
    other, wall = logits_of(model, split, big, device, precision, pad_id)
    out["batch_512"] = {"wall_s": wall, **compare(ref, other)}
    layers = regional_layers(model)  # compiled as the whole step compiles them, for inference here
    compiled = [torch.compile(layer._call_impl, fullgraph=True, dynamic=True) for layer in layers]
    with compiled_calls(layers, compiled):
        first, wall_first = logits_of(model, split, cfg, device, precision, pad_id)
        second, wall_second = logits_of(model, split, cfg, device, precision, pad_id)
    out["compiled"] = {"first_wall_s": wall_first, "wall_s": wall_second, **compare(ref, second)}
    out["compiled"]["first_equals_second"] = bool(torch.equal(first, second))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bundle/all-MiniLM-L6-v2-fp16")
    ap.add_argument("--data", default="bundle/imdb-512.npz")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--variants", nargs="+", default=["sdpa", "flash", "linear", "hybrid"])
    ap.add_argument("--test-samples", type=int, default=None, help="a CPU rehearsal's few reviews")
    ap.add_argument("--smoke", action="store_true", help="the smoke preset (a CPU rehearsal)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    results = {"git_sha": git_sha(), "device": name, "torch": torch.__version__, "step_mode": "eager (evaluation)"}
    results["variants"] = []
    for v in args.variants:
        results["variants"].append(check(v, args, device))
        r = results["variants"][-1]
        print(
            f"{v}: evaluate {r['evaluate'][0]['wall_s']:.2f} / {r['evaluate'][1]['wall_s']:.2f} s "
            f"(busy {r['evaluate'][1]['gpu_busy_s']}), batch 512 {r['batch_512']['wall_s']:.2f} s "
            f"({r['batch_512']['predictions_differ']} differ), compiled {r['compiled']['first_wall_s']:.1f} then "
            f"{r['compiled']['wall_s']:.2f} s ({r['compiled']['predictions_differ']} differ)",
            flush=True,
        )
        Path(args.out).write_text(json.dumps(results, indent=1))  # after every variant: a cut call keeps them
    return 0


if __name__ == "__main__":
    sys.exit(main())
