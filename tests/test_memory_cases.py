"""The paper's memory step from its cause (bench/memory_cases.py): the steps, means and match from per-run
peaks (synthetic numbers), what each case keeps and frees (tiny model on the CPU), the command line's
refusals, and on a GPU the cases' order (keeping more never steps the peak less)."""

import json
import weakref

import pytest
import torch
from helpers import cuda

from attnpaper.__main__ import main
from attnpaper.analysis.results import PAPER
from attnpaper.bench import artefacts as A
from attnpaper.bench import memory_cases as M
from attnpaper.variants import PAPER_ORDER

PAPER_PEAKS = [float(PAPER.loc[v, "peak_memory_mb"]) for v in PAPER_ORDER]


def runs_from(peaks_bytes, reserved_extra=0):
    """Rows as run_case writes them, from allocated peaks in bytes (reserved: the same plus ``reserved_extra``)."""
    return [
        {
            "variant": v,
            "position": i + 1,
            "peak_allocated_bytes": p,
            "peak_reserved_bytes": None if p is None else p + reserved_extra,
            "allocated_after_bytes": None if p is None else p // 2,
            "kept_bytes": 0,
        }
        for i, (v, p) in enumerate(zip(PAPER_ORDER, peaks_bytes))
    ]


def test_the_papers_step_comes_from_its_table():
    ref = M.paper_step()
    assert ref["steps"] == [521.0, 524.0, 524.0] and ref["mean"] == pytest.approx(523.0)
    assert ref["order"] == list(PAPER_ORDER) and ref["peaks_mb"] == PAPER_PEAKS


def test_a_case_stepping_as_the_paper_matches_in_mb_and_not_in_mib():
    mean = M.paper_step()["mean"]
    steps = M.case_steps(runs_from([int(p * 10**6) for p in PAPER_PEAKS]), mean)
    alloc = steps["allocated"]
    assert alloc["steps_mb"] == pytest.approx([521.0, 524.0, 524.0]) and alloc["mean_mb"] == pytest.approx(mean)
    assert alloc["off_mb"] == pytest.approx(0.0, abs=1e-9) and alloc["matches_mb"] is True
    assert alloc["mean_mib"] == pytest.approx(mean * 10**6 / 2**20) and alloc["matches_mib"] is False  # 4.6% less
    assert steps["held"]["steps_mb"] == pytest.approx([260.5, 262.0, 262.0])  # the rows' allocated_after
    assert steps["matches"] == steps["even"] == ["allocated MB", "reserved MB"]  # reserved: allocated + a constant


def test_a_case_stepping_as_the_paper_in_mib_matches_in_mib():
    steps = M.case_steps(runs_from([int(p * 2**20) for p in PAPER_PEAKS]), M.paper_step()["mean"])
    assert steps["allocated"]["matches_mib"] is True and steps["allocated"]["matches_mb"] is False
    assert steps["matches"] == ["allocated MiB", "reserved MiB"]


@pytest.mark.parametrize("factor", [0.97, 1.03])
def test_a_case_3_percent_off_does_not_match(factor):
    """3% off in the unit it is read in; 0.97 is off in MiB too, 1.03 in MB (its MiB reading is 1.8% off)."""
    mean = M.paper_step()["mean"]
    for unit, size in M.UNITS.items():
        steps = M.case_steps(runs_from([int(p * factor * size) for p in PAPER_PEAKS]), mean)
        assert steps["allocated"][f"off_{unit}"] == pytest.approx(factor - 1, abs=1e-6)
        assert steps["allocated"][f"matches_{unit}"] is False


def test_the_verdict_names_the_matching_cases_or_none():
    mean = M.paper_step()["mean"]
    match = M.case_steps(runs_from([int(p * 10**6) for p in PAPER_PEAKS]), mean)
    off = M.case_steps(runs_from([int(p * 0.97 * 10**6) for p in PAPER_PEAKS]), mean)
    found = M.verdict({"nothing": off, "model": match}, mean)
    assert found["matching_cases"] == {"model": ["allocated MB", "reserved MB"]}
    assert found["verdict"].startswith("(ii) model (allocated MB, reserved MB) match the paper's mean step of 523.0")
    assert found["verdict"].endswith("every step within it too: (ii) model (allocated MB, reserved MB)")
    none = M.verdict({"nothing": off, "model": off}, mean)
    assert none["matching_cases"] == {} and none["verdict"].startswith("no case matches")


def test_a_mean_that_matches_by_chance_is_not_even():
    """One large step and two small ones (the variants' own peaks differing) can make the paper's mean."""
    mean = M.paper_step()["mean"]
    peaks = [1424, 1467, 2900, 2993]  # steps 43, 1433, 93 MB: their mean is the paper's, the pattern is not
    steps = M.case_steps(runs_from([p * 10**6 for p in peaks]), mean)
    assert steps["allocated"]["matches_mb"] is True and steps["allocated"]["even_mb"] is False
    assert steps["matches"] == ["allocated MB", "reserved MB"] and steps["even"] == []
    found = M.verdict({"model": steps}, mean)
    assert found["even_cases"] == {} and found["verdict"].endswith("every step within it too: none of them")


def test_without_a_gpu_peaks_are_null_and_the_report_says_so():
    rep = M.summarise({"nothing": runs_from([None] * 4), "model": runs_from([None] * 4)})
    assert rep["matching_cases"] is None and rep["even_cases"] is None
    assert rep["cases_note"] == M.NO_GPU and M.NO_GPU in rep["verdict"]
    assert rep["cases"]["model"]["label"] == "(ii)" and rep["cases"]["model"]["steps"]["matches"] is None
    assert rep["cases"]["model"]["steps"]["allocated"]["mean_mb"] is None
    assert rep["cases"]["model"]["steps"]["kept"]["steps_mb"] == [0.0, 0.0, 0.0]  # counted without a GPU
    assert M.verdict({}, 523.0)["verdict"] == "no case was run"
    one = M.summarise({"model": runs_from([10**9])})  # a GPU, but one variant: no step
    assert one["matching_cases"] is None and "cases_note" not in one
    assert one["verdict"].startswith("one run per case: there is no step between runs; no case can be matched")


def test_each_case_keeps_what_it_says_and_frees_the_rest(lengths_npy):
    """Bytes kept after each run (CPU, tiny model): none, the weights W, W and gradients, and AdamW's two
    moments besides (plus its step counters, a few bytes); everything else collected."""
    lengths = A.imdb_lengths_for(lengths_npy, 32)
    kept = {
        c: [
            r["kept_bytes"] for r in M.run_case(c, ["baseline", "linear"], "bert-tiny-random", 32, 4, 1, lengths, "cpu")
        ]
        for c in M.CASES
    }
    w = kept["model"][0]
    assert w > 0 and kept["nothing"] == [0, 0] and kept["model"] == [w, 2 * w]
    assert kept["gradients"] == [2 * w, 4 * w]
    for i, k in enumerate(kept["optimizer"]):  # AdamW: two moments per weight, and a scalar step per tensor
        assert 0 <= k - 4 * w * (i + 1) < 1024 * (i + 1)


def test_a_survivor_the_case_does_not_keep_is_refused():
    net, opt = torch.nn.Linear(2, 2), None
    alive = weakref.ref(net)
    with pytest.raises(RuntimeError, match="case nothing: model survived a run that does not keep them"):
        M._check_freed("nothing", (), alive, lambda: opt)
    net.weight.grad = torch.zeros_like(net.weight)
    with pytest.raises(RuntimeError, match="case model: gradients survived"):
        M._check_freed("model", (net,), alive, lambda: None)


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--cases", "all"], "unknown case(s) all; valid: nothing, model, gradients, optimizer"),
        (["--cases", "model", "grads"], "unknown case(s) grads; valid: nothing, model, gradients, optimizer"),
    ],
)
def test_bad_cases_are_one_line_before_any_work(argv, says, capsys, monkeypatch, lengths_npy):
    def expensive(*a, **k):
        raise AssertionError("measured before the input was checked")

    for module, name in ((A, "run_kept"), (A, "run_fresh"), (A, "imdb_lengths_for"), (M, "run_cases")):
        monkeypatch.setattr(module, name, expensive)
    assert main(["paper-memory", "--data", str(lengths_npy), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1


def test_cases_run_in_their_order_once_each_and_none_with_an_empty_option(monkeypatch, lengths_npy):
    asked = []

    def run_cases(cases, argv_of, log):
        asked.extend(cases)
        assert argv_of(cases[0])[3:5] == ["paper-memory", "--in-case"]  # a child of its own
        return {c: runs_from([None] * 4) for c in cases}

    monkeypatch.setattr(M, "run_cases", run_cases)
    monkeypatch.setattr(A, "run_kept", lambda *a, **k: [])
    common = ["paper-memory", "--model", "bert-tiny-random", "--arms", "kept", "--data", str(lengths_npy)]
    assert main([*common, "--cases", "optimizer", "nothing", "optimizer"]) == 0
    assert asked == ["nothing", "optimizer"]
    asked.clear()
    assert main([*common, "--cases"]) == 0 and asked == []


@pytest.mark.slow
def test_cases_from_the_command_line_on_a_cpu(tmp_path, lengths_npy):
    out = tmp_path / "memory.json"
    argv = ["paper-memory", "--model", "bert-tiny-random", "--max-length", "32", "--batch-size", "4", "--steps", "1"]
    argv += ["--variants", "baseline", "flash", "--arms", "kept", "--cases", "nothing", "gradients"]
    assert main([*argv, "--data", str(lengths_npy), "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert [r["arm"] for r in rep["rows"]] == ["kept", "kept"] and list(rep["cases"]) == ["nothing", "gradients"]
    assert rep["matching_cases"] is None and rep["cases_note"] == M.NO_GPU
    grads = rep["cases"]["gradients"]["runs"]
    assert [r["variant"] for r in grads] == ["baseline", "flash"] and grads[1]["kept_bytes"] == 2 * grads[0][
        "kept_bytes"
    ]


@cuda
def test_gpu_keeping_more_never_steps_the_peak_less(tmp_path, lengths_npy):
    """Each case in a fresh process (the real path, tiny model): the mean step of the allocated peak of
    (iv) >= (iii) >= (ii) >= (i); the first run is the same in every case, and the last peak can only rise
    with what the earlier runs left."""
    rep = A.paper_memory(
        model="bert-tiny-random", max_length=128, batch_size=32, steps=2, data=lengths_npy, arms=["fresh"], log=print
    )
    means = [rep["cases"][c]["steps"]["allocated"]["mean_mb"] for c in M.CASES]
    assert means[3] >= means[2] >= means[1] >= means[0], means
    assert isinstance(rep["matching_cases"], dict) and "cases_note" not in rep
    held = [rep["cases"][c]["steps"]["held"]["mean_mb"] for c in M.CASES]
    assert held[3] > held[2] > held[1] > held[0], held  # what stays allocated grows with what is kept
