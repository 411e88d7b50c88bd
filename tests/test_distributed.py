"""Several processes: data-parallel runs (torchrun + DDP over gloo on a CPU) and a sweep over GPUs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attnpaper.experiment.run import run_and_record
from attnpaper.training.config import SMOKE, RunConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def no_dropout_model(tmp_path_factory):
    """A tiny random BERT with no dropout, saved: one process and two then compute the same thing."""
    from transformers import BertConfig, BertForSequenceClassification

    from attnpaper.training.loop import load_tokenizer

    d = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=2,
    )
    BertForSequenceClassification(config).save_pretrained(d)
    load_tokenizer("bert-tiny-random").save_pretrained(d)
    return str(d)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["baseline", "flash"])
def test_two_gloo_processes_follow_one_process(variant, no_dropout_model, tmp_path):
    base = {**SMOKE, "model": no_dropout_model, "variant": variant, "batch_size": 8, "epochs": 1, "checkpoint_every": 0}
    one = run_and_record(RunConfig(**base), tmp_path / "one", progress=False)
    two = run_and_record(RunConfig(**base, nproc_per_node=2), tmp_path / "two")
    assert one["world_size"] == 1 and two["world_size"] == 2 and two["nproc_per_node"] == 2
    assert two["steps"] == one["steps"] == 64  # the same global batches, the same number of steps
    assert len(two["loss_every_50_steps"]) == 2
    for a, b in zip(one["loss_every_50_steps"], two["loss_every_50_steps"], strict=True):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-5)  # the same trajectory, up to summation order
    assert abs(two["accuracy"] - one["accuracy"]) <= 2 / 256
    assert two["config_hash"] != one["config_hash"]  # never pooled with one-GPU rows


def test_nproc_must_divide_the_batch():
    with pytest.raises(ValueError, match="nproc_per_node=3: must divide batch_size=32"):
        RunConfig(nproc_per_node=3).validate()


def test_gpus_refused_without_gpus(tmp_path, capsys, monkeypatch):
    from attnpaper.__main__ import main

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has GPUs")
    rc = main(["sweep", "--smoke", "--gpus", "2", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--gpus needs CUDA GPUs" in err[0]


def test_gpus_beyond_the_visible_ones(monkeypatch):
    from attnpaper.experiment.sweep import gpu_ids

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert gpu_ids("all") == ["0", "1"] and gpu_ids("1") == ["0"]
    with pytest.raises(ValueError, match="--gpus 3: valid: all, or 1 to 2"):
        gpu_ids("3")


@pytest.mark.slow
def test_sweep_on_two_slots_runs_each_configuration_once(tmp_path):
    from attnpaper.experiment.sweep import sweep_on_gpus

    log = []
    argv = ["--smoke", "--variants", "baseline", "linear", "--seeds", "0", "--out", str(tmp_path), "--quiet"]
    res = sweep_on_gpus(argv, ["0", "1"], log=log.append)  # on a CPU the slots only pin the workers
    assert sorted(r["status"] for r in res) == ["ok", "ok"] and len({r["record"] for r in res}) == 2
    recs = [json.loads(Path(r["record"]).read_text()) for r in res]
    assert {rec["device_slot"] for rec in recs} <= {"0", "1"}
    assert all(not rec["notes"].get("concurrent_runs") for rec in recs)  # one run per slot: solo
    assert any(line.startswith("[gpu 0]") for line in log) and any(line.startswith("[gpu 1]") for line in log)
