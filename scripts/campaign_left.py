"""What a campaign folder still lacks, as `scripts/campaign.sh` jobs (issue 20): run it before each GPU call.

    python scripts/campaign_left.py results/h200

Reads the records, benches, sweeps and artefacts under the folder, prints the commits its files come
from and the jobs that would complete it (the plan of issue 20: 5 seeds at 128 tokens, 3 at 512, the
accuracy arms, issue 39's too, >= 3 repeats of every bench row but captured (once, at 128 tokens),
both sweeps, the memory test; issue 39: the op profile of every variant, the Trainer reference row, 5
seeds at 128 tokens, and every variant's eager step in the setup a T4 user had, 3 repeats), and exits 1
while anything is missing. A script, not a CLI command: it knows one campaign's plan, not the book's API.
The variants, the sweeps' lengths and the record reader are the package's, so the plan follows them.
"""

import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from attnpaper.analysis.results import load_records  # noqa: E402
from attnpaper.bench.memory_cases import CASES  # noqa: E402
from attnpaper.bench.model import IMDB_MAX  # noqa: E402
from attnpaper.bench.scaling import KERNEL_LENGTHS, MODEL_LENGTHS  # noqa: E402
from attnpaper.experiment.records import is_record_path, read_record  # noqa: E402
from attnpaper.variants import VARIANTS  # noqa: E402

RUNS = {  # campaign.sh job prefix and arm -> (folder of records, variants, seeds)
    ("128", ""): ("records", VARIANTS, range(5)),
    ("512", ""): ("len512/records", VARIANTS, range(3)),
    ("128", "fp16"): ("artefacts/fp16/records", ("baseline", "flash"), range(3)),
    ("128", "dropout"): ("artefacts/dropout/records", ("baseline",), range(3)),
    # issue 39's arms, paired with the main runs' seeds 0-2: flash attending its padding, elu+1, 4x FAVOR+ features
    ("128", "nomask"): ("artefacts/nomask/records", ("flash",), range(3)),
    ("128", "elu"): ("artefacts/elu/records", ("linear",), range(3)),
    ("128", "favor4x"): ("artefacts/favor4x/records", ("linear",), range(3)),
}
TRAINER = ("trainer", range(5))
"""campaign.sh's trainer job: its folder of records (trainer-ref, 128 tokens) and the seeds it runs."""
BENCH = (("minilm", 128), ("distilbert", 128), ("distilbert", 256), ("distilbert", 512))
BENCH_ROWS = [(v, m) for v in VARIANTS for m in ("whole", "eager")]
BENCH_ROWS += [("transformers", "eager"), ("transformers", "reduce-overhead")]  # --reference
REPEATS = 3
PROFILE = "artefacts/op-profile.json"
"""campaign.sh's profile job: every variant's op profile at DistilBERT-base's shape (profile-ops)."""
CAPTURED = [(v, "captured") for v in VARIANTS]  # a full compile a row: once, at 128 tokens (bench --once)
BENCH_T4 = ("bench-t4", (("distilbert", 128),), [(v, "eager") for v in VARIANTS])
"""Issue 39's time column measured in the setup a T4 user had (bench --setup t4): folder, (model, length)s, rows."""


def load(path):
    return json.loads(Path(path).read_text())


def runs_left(root, commits):
    """campaign.sh runs jobs for the (variant, seed) pairs with no ok record, seeds grouped by what they lack."""
    jobs = []
    for (length, arm), (folder, variants, seeds) in RUNS.items():
        done = set()
        if any(is_record_path(p) for p in (root / folder).glob("*.json")):  # load_records refuses none
            for r in load_records(root / folder).itertuples():  # damaged records: reported, left out
                if r.status == "ok":
                    done.add((r.variant, r.seed))
                    commits[r.git_sha].append(r.path)
        by_lack = defaultdict(list)  # the variants a seed lacks -> those seeds
        for s in seeds:
            lack = tuple(v for v in variants if (v, s) not in done)
            if lack:
                by_lack[lack].append(s)
        for lack, ss in by_lack.items():
            jobs.append(f"runs:{length}:{','.join(lack)}:{','.join(map(str, ss))}" + (f":{arm}" if arm else ""))
    return jobs


def trainer_left(root, commits):
    """The trainer job for the seeds with no ok record (read_record: the table refuses their variant)."""
    folder, seeds = TRAINER
    done = set()
    for p in sorted((root / folder).glob("*.json")):
        try:
            r = read_record(p) if is_record_path(p) else None
        except (ValueError, OSError) as err:
            print(f"skipped: {err}", file=sys.stderr)
            continue
        if r and r["status"] == "ok" and r["max_length"] == 128:
            done.add(r["seed"])
            commits[r["git_sha"]].append(p)
    lack = [s for s in seeds if s not in done]
    return [f"trainer:{','.join(map(str, lack))}"] if lack else []


def bench_repeats(folder, commits) -> dict:
    """(model, length, variant, mode) -> {(file, repeat)} over a folder's bench files, their commits counted."""
    repeats = defaultdict(set)
    for f in sorted(folder.glob("bench-*.json")):
        d = load(f)
        commits[d.get("git_sha")].append(f)
        for r in d["rows"]:
            model = "minilm" if "minilm" in r["model"].lower() else "distilbert"
            repeats[model, r["max_length"], r["variant"], r["step_mode"]].add((f.name, r["repeat"]))
    return repeats


def bench_left(root, commits):
    """bench jobs for the (model, length)s where some row has fewer than REPEATS repeats, pooled over files;
    then the same for the T4 setup's benchmark (BENCH_T4)."""
    repeats = bench_repeats(root / "bench", commits)
    jobs = []
    for model, length in BENCH:
        have = min(len(repeats[model, length, v, m]) for v, m in BENCH_ROWS)
        once = length != 128 or min(len(repeats[model, length, v, m]) for v, m in CAPTURED) >= 1
        if have < REPEATS or not once:
            jobs.append(f"bench:{model}:{length}:{max(1, REPEATS - have)}")
    folder, shapes, rows = BENCH_T4
    repeats = bench_repeats(root / folder, commits)
    for model, length in shapes:
        have = min(len(repeats[model, length, v, m]) for v, m in rows)
        if have < REPEATS:
            jobs.append(f"bench:{model}:{length}:{REPEATS - have}:t4")
    return jobs


def model_sweep_left(root, commits):
    """The whole-step sweep: every variant at every length, and the paper's batch at N <= IMDB_MAX."""
    path = root / "scaling-model.json"
    if not path.exists():
        return ["scaling-model"]
    d = load(path)
    for run in d["runs"]:
        commits[run.get("git_sha")].append(path)
    have = {(r["variant"], r["seq_len"], r["batch_size"]) for r in d["rows"] if r.get("status") == "ok"}
    want = {(v, n, d["tokens_per_batch"] // n) for v in VARIANTS for n in MODEL_LENGTHS}
    want |= {(v, n, d["paper_batch"]) for v in VARIANTS for n in MODEL_LENGTHS if n <= IMDB_MAX}
    if want <= have:
        return []
    gaps = ", ".join(f"{v} at {n} (batch {b})" for v, n, b in sorted(want - have, key=lambda g: (g[1], g[0])))
    lengths = " ".join(map(str, sorted({n for _, n, _ in want - have})))
    # --append replaces every row at the lengths it is given, so each length's rows come from one process
    return [f"scaling model --lengths {lengths} --append   # every variant again; missing: {gaps}"]


def kernel_sweep_left(root, commits):
    path = root / "scaling-kernels.json"
    if not path.exists():
        return ["scaling-kernels"]
    d = load(path)
    commits[d.get("git_sha")].append(path)
    return [] if sorted({r["seq_len"] for r in d["rows"]}) == list(KERNEL_LENGTHS) else ["scaling-kernels"]


def left(root):
    """(commit -> files, jobs still to run) for a campaign folder."""
    root, commits = Path(root), defaultdict(list)
    jobs = runs_left(root, commits) + bench_left(root, commits)
    jobs += model_sweep_left(root, commits) + kernel_sweep_left(root, commits)
    memory = root / "artefacts" / "paper-memory.json"
    report = load(memory) if memory.exists() else {}
    if report:
        commits[report.get("git_sha")].append(memory)
    cases = report.get("cases") or {}
    if not report or any(c not in cases for c in CASES):  # issue 39: the four cases of what runs keep
        jobs.append("memory")
    jobs += profile_left(root, commits) + trainer_left(root, commits)  # before ``commits`` is copied: they add to it
    return dict(commits), jobs


def profile_left(root, commits):
    """The profile job while artefacts/op-profile.json is missing or lacks a variant (profile-ops writes
    every variant in one file, so a rerun rewrites it whole)."""
    path = root / PROFILE
    if not path.exists():
        return ["profile"]
    d = load(path)
    commits[d.get("git_sha")].append(path)
    return [] if set(VARIANTS) <= set(d.get("variants", {})) else ["profile"]


def main(argv):
    if len(argv) != 1:
        print("usage: python scripts/campaign_left.py FOLDER (a campaign's results, e.g. results/h200)")
        return 2
    if not Path(argv[0]).is_dir():
        print(f"error: no folder {argv[0]}; give a campaign's results folder, e.g. results/h200")
        return 2
    commits, jobs = left(argv[0])
    for sha, files in commits.items():
        print(f"commit {str(sha)[:7]}: {len(files)} files")
    if len(commits) > 1:
        print("more than one commit: issue 20 wants one")
    print("\n".join(jobs) if jobs else "nothing left: the campaign is complete")
    return 1 if jobs or len(commits) > 1 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
