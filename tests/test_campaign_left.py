"""scripts/campaign_left.py: the campaign.sh jobs a results folder still lacks, from its files alone."""

import importlib.util
import json
from pathlib import Path

import pytest
from helpers import make_record

PATH = Path(__file__).resolve().parent.parent / "scripts" / "campaign_left.py"
spec = importlib.util.spec_from_file_location("campaign_left", PATH)
cl = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cl)

SHA = "845abc38223db2a9b267ae7bb5d7390363ea8df0"


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def record(root, folder, variant, seed, status="ok", sha=SHA):
    write(root / folder / f"{variant}_seed{seed}.json", make_record(variant, seed, 0.85, status=status, git_sha=sha))


def bench(root, name, model, length, repeats, skip=(), captured=True, folder="bench", kinds=None):
    """A bench file as campaign.sh's job writes it: captured rows in the first repeat at 128 tokens only."""
    once = cl.CAPTURED if captured and length == 128 else []
    rows = [
        {"model": model, "max_length": length, "variant": v, "step_mode": m, "repeat": k}
        for k in repeats
        for v, m in (kinds or cl.BENCH_ROWS) + (once if k == repeats[0] and not kinds else [])
        if (v, m, k) not in skip
    ]
    write(root / folder / name, {"git_sha": SHA, "rows": rows})


def test_an_empty_folder_lacks_every_job(tmp_path):
    commits, jobs = cl.left(tmp_path)
    assert commits == {}
    assert jobs == [
        "runs:128:baseline,sdpa,flash,linear,hybrid:0,1,2,3,4",
        "runs:512:baseline,sdpa,flash,linear,hybrid:0,1,2",
        "runs:128:baseline,flash:0,1,2:fp16",
        "runs:128:baseline:0,1,2:dropout",
        "runs:128:flash:0,1,2:nomask",
        "runs:128:linear:0,1,2:elu",
        "runs:128:linear:0,1,2:favor4x",
        "bench:minilm:128:3",
        "bench:distilbert:128:3",
        "bench:distilbert:256:3",
        "bench:distilbert:512:3",
        "bench:distilbert:128:3:t4",
        "scaling-model",
        "scaling-kernels",
        "memory",
        "profile",
        "trainer:0,1,2,3,4",
    ]


def test_runs_group_seeds_by_the_variants_they_lack(tmp_path):
    for v in cl.VARIANTS:
        record(tmp_path, "records", v, 0)
        record(tmp_path, "records", v, 3)
    for v in ("baseline", "sdpa", "flash"):
        record(tmp_path, "records", v, 1)
    record(tmp_path, "records", "linear", 1, status="failed")  # a failed run counts as not run
    record(tmp_path, "artefacts/dropout/records", "baseline", 2)
    jobs = cl.runs_left(tmp_path, cl.defaultdict(list))
    assert jobs[:2] == ["runs:128:linear,hybrid:1", "runs:128:baseline,sdpa,flash,linear,hybrid:2,4"]
    assert [j for j in jobs if j.endswith(":dropout")] == ["runs:128:baseline:0,1:dropout"]


def test_issue_39_arms_want_three_seeds_each(tmp_path):
    """flash without a padding mask, elu+1 and 4x FAVOR+ features: seeds 0-2, each in its own folder."""
    record(tmp_path, "artefacts/nomask/records", "flash", 1)
    for s in range(3):
        record(tmp_path, "artefacts/elu/records", "linear", s)
    record(tmp_path, "artefacts/favor4x/records", "linear", 0)
    record(tmp_path, "artefacts/favor4x/records", "linear", 2, status="failed")
    jobs = cl.runs_left(tmp_path, cl.defaultdict(list))
    assert jobs[-2:] == ["runs:128:flash:0,2:nomask", "runs:128:linear:1,2:favor4x"]
    assert not any(j.endswith(":elu") for j in jobs)


def test_bench_repeats_pool_over_files_and_the_scarcest_row_decides(tmp_path):
    bench(tmp_path, "bench-distilbert-512-c1.json", "distilbert-base-random", 512, [0])
    bench(
        tmp_path, "bench-distilbert-512-c2.json", "distilbert-base-random", 512, [0, 1], skip={("hybrid", "eager", 1)}
    )
    bench(tmp_path, "bench-minilm-128-c3.json", "bundle/all-MiniLM-L6-v2-fp16", 128, [0, 1, 2])
    jobs = cl.bench_left(tmp_path, cl.defaultdict(list))
    t4 = "bench:distilbert:128:3:t4"
    assert jobs == ["bench:distilbert:128:3", "bench:distilbert:256:3", "bench:distilbert:512:1", t4]
    bench(tmp_path, "bench-distilbert-512-c4.json", "distilbert-base-random", 512, [0])
    assert "bench:distilbert:512:1" not in cl.bench_left(tmp_path, cl.defaultdict(list))


def test_the_t4_setups_bench_is_its_own_job_and_folder(tmp_path):
    """Issue 39's eager steps in the setup a T4 user had: bench-t4/, every variant, 3 repeats pooled over files;
    its rows never count for the main benchmark's, nor the main benchmark's for it."""
    folder, shapes, rows = cl.BENCH_T4
    assert folder == "bench-t4" and shapes == (("distilbert", 128),) and {v for v, _ in rows} == set(cl.VARIANTS)
    t4 = dict(folder=folder, kinds=rows)
    bench(tmp_path, "bench-distilbert-128-c1.json", "distilbert-base-random", 128, [0, 1], **t4)
    assert cl.bench_left(tmp_path, cl.defaultdict(list))[-1] == "bench:distilbert:128:1:t4"
    bench(tmp_path, "bench-distilbert-128-c2.json", "distilbert-base-random", 128, [0], **t4)
    commits = cl.defaultdict(list)
    jobs = cl.bench_left(tmp_path, commits)
    assert not any(j.endswith(":t4") for j in jobs) and "bench:distilbert:128:3" in jobs
    assert len(commits[SHA]) == 2  # both files counted for the one-commit check


def test_captured_rows_are_needed_once_at_128_tokens(tmp_path):
    """bench --once captured: one captured row per variant at 128 tokens is enough; none is asked for at 512."""
    bench(tmp_path, "bench-minilm-128-c1.json", "bundle/all-MiniLM-L6-v2-fp16", 128, [0, 1, 2], captured=False)
    bench(tmp_path, "bench-distilbert-512-c1.json", "distilbert-base-random", 512, [0, 1, 2])
    jobs = cl.bench_left(tmp_path, cl.defaultdict(list))
    assert "bench:minilm:128:1" in jobs and not any(j.startswith("bench:distilbert:512") for j in jobs)
    bench(tmp_path, "bench-minilm-128-c2.json", "bundle/all-MiniLM-L6-v2-fp16", 128, [0])
    assert not any(j.startswith("bench:minilm") for j in cl.bench_left(tmp_path, cl.defaultdict(list)))


def sweep(skip=()):
    rows = [
        {"variant": v, "seq_len": n, "batch_size": b, "status": "ok"}
        for v in cl.VARIANTS
        for n in cl.MODEL_LENGTHS
        for b in {16384 // n, *([32] if n <= 512 else [])}
        if (v, n) not in skip
    ]
    return {"tokens_per_batch": 16384, "paper_batch": 32, "runs": [{"git_sha": SHA}], "rows": rows}


@pytest.mark.parametrize(
    ("skip", "expected"),
    [
        ((), []),
        ({("baseline", 8192)}, ["--lengths 8192 --append", "missing: baseline at 8192 (batch 2)"]),
        ({("sdpa", 1024), ("sdpa", 2048)}, ["--lengths 1024 2048 --append", "sdpa at 2048 (batch 8)"]),
    ],
)
def test_the_model_sweep_names_its_missing_rows_and_reruns_their_lengths(tmp_path, skip, expected):
    write(tmp_path / "scaling-model.json", sweep(skip))
    jobs = cl.model_sweep_left(tmp_path, cl.defaultdict(list))
    assert len(jobs) == (1 if expected else 0)
    assert all(e in jobs[0] for e in expected)


def test_files_of_two_commits_are_reported_and_fail(tmp_path, capsys):
    record(tmp_path, "records", "baseline", 0)
    record(tmp_path, "records", "sdpa", 0, sha="f1312bb61b14e1cbe87a8c9f26ffd7b8ba08a0ff")
    assert cl.main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "commit 845abc3: 1 files" in out and "commit f1312bb: 1 files" in out and "more than one commit" in out


def test_a_missing_folder_gets_one_line_and_exit_2(tmp_path, capsys):
    assert cl.main([str(tmp_path / "nowhere")]) == 2
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no folder" in out and "nowhere" in out and "results/h200" in out
    assert cl.main([]) == 2 and capsys.readouterr().out.startswith("usage:")


def test_hidden_and_damaged_records_do_not_count(tmp_path, capsys):
    """Records are read as the book reads them (load_records): a temporary write or a damaged file is no run."""
    record(tmp_path, "artefacts/dropout/records", "baseline", 0)
    (tmp_path / "artefacts/dropout/records/.tmp-baseline_seed1.json").write_text("{}")
    (tmp_path / "artefacts/dropout/records/baseline_seed2.json").write_text('{"variant": "baseline"')
    jobs = cl.runs_left(tmp_path, cl.defaultdict(list))
    assert [j for j in jobs if j.endswith(":dropout")] == ["runs:128:baseline:1,2:dropout"]
    assert "skipped" in capsys.readouterr().err  # the damaged one is named, not silently dropped


def trainer_record(root, seed, status="ok", max_length=128):
    rec = make_record("trainer", seed, 0.88, status=status, git_sha=SHA, max_length=max_length)
    write(root / "trainer" / f"trainer_seed{seed}_abc.json", rec)


def test_the_trainer_row_lacks_the_seeds_with_no_ok_record_at_128_tokens(tmp_path, capsys):
    for s in (0, 2):
        trainer_record(tmp_path, s)
    trainer_record(tmp_path, 1, status="failed")  # a failed seed counts as not run
    trainer_record(tmp_path, 3, max_length=512)  # another length is not this row
    (tmp_path / "trainer" / "trainer_seed4_abc.json").write_text('{"variant": "trainer"')  # damaged: not run
    commits = cl.defaultdict(list)
    assert cl.trainer_left(tmp_path, commits) == ["trainer:1,3,4"]
    assert len(commits[SHA]) == 2 and "skipped" in capsys.readouterr().err
    for s in (1, 3, 4):
        trainer_record(tmp_path, s)
    assert cl.trainer_left(tmp_path, cl.defaultdict(list)) == []


def test_the_op_profile_is_left_until_it_holds_every_variant(tmp_path):
    """campaign.sh's profile job: artefacts/op-profile.json with every variant, its commit counted."""
    assert cl.profile_left(tmp_path, cl.defaultdict(list)) == ["profile"]
    write(tmp_path / cl.PROFILE, {"git_sha": SHA, "variants": {v: {} for v in cl.VARIANTS[:-1]}})
    assert cl.profile_left(tmp_path, cl.defaultdict(list)) == ["profile"]
    write(tmp_path / cl.PROFILE, {"git_sha": SHA, "variants": {v: {} for v in cl.VARIANTS}})
    commits = cl.defaultdict(list)
    assert cl.profile_left(tmp_path, commits) == [] and list(commits) == [SHA]
    commits, jobs = cl.left(tmp_path)
    assert "profile" not in jobs and commits == {SHA: [tmp_path / cl.PROFILE]}  # left() reports its commit too


def test_a_memory_report_without_the_four_cases_asks_for_the_memory_job_again(tmp_path):
    """Issue 39: paper-memory.json without its cases section (the published one) or lacking a case is not done."""
    path = tmp_path / "artefacts" / "paper-memory.json"
    write(path, {"git_sha": SHA, "rows": []})
    assert "memory" in cl.left(tmp_path)[1]
    write(path, {"git_sha": SHA, "rows": [], "cases": {c: {} for c in cl.CASES[:3]}})
    assert "memory" in cl.left(tmp_path)[1]
    write(path, {"git_sha": SHA, "rows": [], "cases": {c: {} for c in cl.CASES}})
    assert "memory" not in cl.left(tmp_path)[1]
