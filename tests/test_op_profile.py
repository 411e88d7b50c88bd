"""The op profile (bench/op_profile.py) and the profile-ops command: FLOPs and bytes of known ops exactly,
a tiny model's step in three phases, and every bad argument refused in one line before any work."""

import json

import numpy as np
import pytest
import torch
from helpers import one_error_line
from helpers import op_profile as profile
from helpers import op_row as row

from attnpaper.__main__ import main
from attnpaper.analysis import roofline as R
from attnpaper.bench import op_profile as O
from attnpaper.cli import profile_ops as CLI


def count(fn):
    counter = O.OpCounter()
    with counter:
        fn()
    return counter.rows()


def test_a_matmul_counts_its_flops_exactly_and_its_three_tensors_bytes():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    (r,) = count(lambda: a @ b)
    assert r["op"] == "aten.mm" and r["calls"] == 1 and r["kernel"]
    assert r["flops"] == 2 * 8 * 16 * 4 and r["bytes"] == 4 * (8 * 16 + 16 * 4 + 8 * 4)
    assert r["shapes"] == "float32[8, 16] float32[16, 4]" and r["elements"] == 8 * 16


def test_bytes_count_a_tensor_passed_twice_once_and_an_in_place_write_as_a_write():
    x, y = torch.randn(100), torch.randn(100)
    (twice,) = count(lambda: x * x)
    assert twice["bytes"] == 4 * (100 + 100)  # x read once, the product written
    (inplace,) = count(lambda: x.add_(y))
    assert inplace["bytes"] == 4 * (100 + 100 + 100)  # x and y read, x written
    (bf16,) = count(lambda: x.to(torch.bfloat16))
    assert bf16["op"] == "aten._to_copy" and bf16["bytes"] == 4 * 100 + 2 * 100


def test_views_launch_nothing_and_a_broadcast_row_counts_once():
    x = torch.randn(4, 6)
    rows = count(lambda: x.t())
    assert [(r["op"], r["kernel"], r["bytes"]) for r in rows] == [("aten.t", False, 0)]
    row1 = torch.randn(1, 6)
    assert O.tensor_bytes(row1.expand(1000, 6)) == 4 * 6
    assert O.tensor_bytes(x[:, ::2]) == 4 * 12 and O.tensor_bytes(torch.empty(0, 3)) == 0


def test_sdpa_on_a_cpu_is_charged_torchs_sdpa_formula():
    q = torch.randn(2, 3, 16, 8, requires_grad=True)
    rows = count(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward())
    by = {r["op"]: r["flops"] for r in rows}
    fwd = [f for op, f in by.items() if op.startswith("aten._scaled_dot_product") and not op.endswith("backward")]
    bwd = [f for op, f in by.items() if op.startswith("aten._scaled_dot_product") and op.endswith("backward")]
    assert fwd == [2 * 2 * 2 * 3 * 16 * 16 * 8]  # QK^T and PV: 2 x (2 B H N N D)
    assert bwd == [5 * 2 * 2 * 3 * 16 * 16 * 8]  # torch's count: five products of the same size


def test_a_tiny_models_step_is_counted_in_three_phases_and_backward_doubles_the_forward():
    out = O.profile_variant("baseline", "bert-tiny-random", 32, 4, np.arange(20, 60), 1, "cpu", "fp32")
    rows, phases = out["rows"], {}
    for r in rows:
        phases[r["phase"]] = phases.get(r["phase"], 0) + r["flops"]
    assert set(r["phase"] for r in rows) == set(R.PHASES) and out["slot_tokens"] == 4 * 32
    assert phases["backward"] == 2 * phases["forward"] and phases["optimizer"] == 0
    adam = [r for r in rows if r["phase"] == "optimizer" and r["kernel"]]
    assert adam and all(r["bytes"] > 0 for r in adam)
    pred = R.predict({"kind": R.PROFILE_KIND, "variants": {"baseline": out}}, "t4")
    assert pred["variants"]["baseline"]["step_s"] > 0


def test_the_commands_precisions_are_the_counters():
    assert CLI.PRECISIONS == O.PRECISIONS


# --- the command line ---


@pytest.fixture
def no_work(monkeypatch):
    def work(*a, **k):
        raise AssertionError("read, built or counted before the input was checked")

    monkeypatch.setattr(O, "profile_variant", work)
    monkeypatch.setattr("attnpaper.bench.step.imdb_lengths", work)


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--variants", "softmax"], "unknown variant(s) softmax; valid: baseline, sdpa, flash, linear, hybrid"),
        (["--batch-size", "1"], "--batch-size must be an int >= 2, got 1"),
        (["--steps", "0"], "--steps must be an int >= 1, got 0"),
        (["--length", "4"], "--length 4: lengths must be ints from 8 to 512"),
        (["--gpu", "a100"], "unknown GPU 'a100'; valid: t4, h200"),
        (["--launch-us", "-1"], "--launch-us must be a finite number >= 0, got -1.0"),
        (["--elementwise-flops", "nan"], "--elementwise-flops must be a finite number >= 0, got nan"),
        (["--data", "{tmp}/missing"], "missing: no such folder"),
        (["--out", "{tmp}"], "is a folder; give a file path"),
        (["--from", "{tmp}/none.json"], "none.json: no such file"),
        (["--from", "{tmp}/junk.json"], "junk.json is not JSON"),
        (["--from", "{tmp}/other.json"], "other.json: not an op profile"),
        (["--from", "{tmp}/other.json", "--out", "{tmp}/x.json"], "--from reads a saved profile and --out writes"),
    ],
)
def test_profile_ops_refuses_before_any_work(argv, says, tmp_path, capsys, no_work):
    (tmp_path / "junk.json").write_text("{")
    (tmp_path / "other.json").write_text(json.dumps({"rows": []}))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["profile-ops", "--model", "bert-tiny-random", *argv]) == 2
    one_error_line(capsys, says)


def test_profile_ops_predicts_from_a_saved_profile(tmp_path, capsys, no_work):
    saved = profile({"baseline": ([row(flops=65e9)], 1), "flash": ([row(flops=65e9), row(nbytes=32e6)], 1)})
    saved |= {"model": "m", "length": 128, "batch_size": 32, "precision": "bf16", "device": "GPU", "git_sha": "abc1234"}
    (tmp_path / "p.json").write_text(json.dumps(saved))
    assert main(["profile-ops", "--from", str(tmp_path / "p.json"), "--launch-us", "5"]) == 0
    out = capsys.readouterr().out
    assert "on GPU (commit abc1234)" in out and "T4 (fp16 tensor core)" in out
    assert "spread, roofline step: max/min 1.100 (flash / baseline)" in out


@pytest.mark.cuda
@pytest.mark.parametrize("variant", ["baseline", "flash", "linear"])
def test_gpu_step_is_counted_in_three_phases_with_the_fused_adamw_bytes(variant):
    """On CUDA in bf16 (what the campaign's profile job runs): the dispatch mode sees the backward and the fused
    AdamW's in-place writes, and the attention kernels (flash's varlen included) are charged FLOPs."""
    out = O.profile_variant(variant, "bert-tiny-random", 32, 4, np.arange(20, 60), 1, "cuda", "bf16")
    flops, nbytes = {}, {}
    for r in out["rows"]:
        flops[r["phase"]] = flops.get(r["phase"], 0) + r["flops"]
        nbytes[r["phase"]] = nbytes.get(r["phase"], 0) + r["bytes"]
    assert flops["forward"] > 0 and flops["backward"] >= 1.5 * flops["forward"], flops
    assert nbytes["optimizer"] > 0, nbytes
    attention = [r for r in out["rows"] if "attention" in r["op"] or "attn" in r["op"]]
    assert variant == "linear" or any(r["flops"] > 0 for r in attention), sorted({r["op"] for r in out["rows"]})
