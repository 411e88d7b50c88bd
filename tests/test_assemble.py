"""The train-step factory (training/assemble.py) and the record Meter assembles: one place, each caller's choices."""

import ast
import math
from pathlib import Path

import pytest
import torch

from attnpaper.training.assemble import assemble, assemble_run, make_scheduler
from attnpaper.training.config import RunConfig
from attnpaper.training.measure import Meter
from attnpaper.training.step import TrainStep

ROOT = Path(__file__).resolve().parent.parent


def tiny():
    return torch.nn.Linear(4, 2)


def test_defaults_on_a_cpu_no_fused_adamw_no_scaler_a_constant_rate_and_no_step():
    parts = assemble(tiny(), "cpu", lr=0.5, weight_decay=0.1)
    group = parts.optimizer.param_groups[0]
    assert isinstance(parts.optimizer, torch.optim.AdamW)
    assert (group["lr"], group["weight_decay"], group["fused"]) == (0.5, 0.1, False)
    assert not parts.scaler.is_enabled() and parts.step is None
    lrs = []
    for _ in range(5):
        lrs.append(parts.optimizer.param_groups[0]["lr"])
        parts.optimizer.step()
        parts.scheduler.step()
    assert lrs == [0.5] * 5  # constant, no total needed (the benchmarks run until they are done)


def test_fused_is_passed_as_given_and_no_schedule_means_none():
    for fused in (None, True, False):
        parts = assemble(tiny(), "cpu", lr=1e-3, weight_decay=0.01, fused=fused, schedule=None)
        assert parts.optimizer.param_groups[0]["fused"] is fused and parts.scheduler is None


def test_the_scaler_is_enabled_under_fp16_only():
    # the cpu GradScaler needs no GPU; what matters is which precision turns it on
    assert assemble(tiny(), "cpu", lr=1e-3, weight_decay=0.0, precision="fp16").scaler.is_enabled()
    for precision in ("bf16", "fp32"):
        assert not assemble(tiny(), "cpu", lr=1e-3, weight_decay=0.0, precision=precision).scaler.is_enabled()


def test_a_step_is_built_for_a_mode_and_needs_a_schedule(tiny_bert):
    from attnpaper.model.build import build_model

    model = build_model(tiny_bert, "sdpa", num_labels=2)
    parts = assemble(model, "cpu", lr=1e-3, weight_decay=0.0, step_mode="eager", max_grad_norm=1.0)
    assert isinstance(parts.step, TrainStep) and parts.step.mode == "eager" and parts.step.max_grad_norm == 1.0
    assert parts.step.optimizer is parts.optimizer and parts.step.scheduler is parts.scheduler
    assert parts.step.scaler is parts.scaler and parts.step.ddp is None
    with pytest.raises(ValueError, match="steps a schedule"):
        assemble(model, "cpu", lr=1e-3, weight_decay=0.0, step_mode="eager", schedule=None)


def test_a_run_takes_lr_decay_schedule_and_clipping_from_its_config(tiny_bert):
    from attnpaper.model.build import build_model

    cfg = RunConfig(lr=2e-4, weight_decay=0.05, schedule="linear", warmup_ratio=0.1, max_grad_norm=0.5)
    parts = assemble_run(build_model(tiny_bert, "sdpa", num_labels=2), "cpu", cfg, "eager", "fp32", total=25)
    group = parts.optimizer.param_groups[0]
    assert group["initial_lr"] == 2e-4 and group["weight_decay"] == 0.05 and parts.step.max_grad_norm == 0.5
    ref = make_scheduler(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2e-4), "linear", 0.1, 25)
    assert parts.scheduler.lr_lambdas[0](3) == ref.lr_lambdas[0](3) == 1.0  # ceil(0.1 x 25) = 3 warm-up steps
    assert parts.scheduler.lr_lambdas[0](2) == pytest.approx(2 / 3)


def test_adamw_is_made_only_by_the_factory():
    """The loop, the benchmarks and the scripts build their optimizer through assemble, nowhere else."""
    made = []
    for path in [*sorted((ROOT / "attnpaper").rglob("*.py")), *sorted((ROOT / "scripts").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(("AdamW", "GradScaler", "get_scheduler")):
                made.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node.func)}")
    assert all(m.startswith("attnpaper/training/assemble.py:") for m in made), made
    assert len(made) == 3, made  # AdamW, GradScaler, get_scheduler: once each


def test_meter_record_adds_the_runs_counts_after_the_report_in_the_records_order():
    model = tiny()
    meter = Meter(torch.device("cpu"), "eager", total=4)
    meter.start()
    for i in range(4):
        with meter.step(i, (2, 4)):
            pass
    run = {"step": 4, "real_tokens": 30, "slot_tokens": 40, "losses": [torch.tensor(0.5)], "train_time_s": 0.0}
    ran = {"precision": "fp32", "step_mode": "eager"}
    out = meter.record(run, 1, 2.0, model, torch.optim.AdamW(model.parameters()), ran)
    keys = list(out)
    assert keys[keys.index("steps") :] == [
        "steps",
        "resumed_from_step",
        "precision",
        "step_mode",
        "tokens_per_s",
        "padded_tokens_per_s",
        "padding_fraction",
        "loss_every_50_steps",
    ]
    assert out["steps"] == 4 and out["resumed_from_step"] == 1 and out["train_time_s"] >= 2.0  # resumed: + before
    assert out["tokens_per_s"] == 30 / out["train_time_s"] and out["padded_tokens_per_s"] == 40 / out["train_time_s"]
    assert out["padding_fraction"] == 0.25 and out["loss_every_50_steps"] == [0.5]
    assert isinstance(out["loss_every_50_steps"][0], float) and not math.isnan(out["compile_time_s"])
