"""The run parameters and the variant table, each defined once, and what is checked against them."""

import ast
import dataclasses
import json
from pathlib import Path

import pytest

from attnpaper import variants as V
from attnpaper.training.config import SMOKE, RunConfig

ROOT = Path(__file__).resolve().parent.parent
RUN_ONLY = {"smoke", "output_dir", "checkpoint_dir", "fresh", "keep_checkpoint", "launched_at"}
"""Notebook parameters that steer the run and are not part of RunConfig."""


def parameters_cell() -> dict:
    """name -> default of chapters/07_experiment.ipynb's papermill parameters cell (annotated assignments)."""
    nb = json.loads((ROOT / "chapters" / "07_experiment.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {n.target.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.AnnAssign)}


def test_the_notebook_parameters_are_the_run_parameters():
    cell = parameters_cell()
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    assert set(cell) - RUN_ONLY == fields, set(cell) ^ (fields | RUN_ONLY)
    defaults = RunConfig()
    for name in fields:
        if name in SMOKE:  # None: the preset or the paper's default, chosen by from_parameters
            assert cell[name] is None, name
        else:
            assert cell[name] == getattr(defaults, name), name


def test_every_parameter_has_a_meaning_and_a_check():
    rows = RunConfig.describe()
    assert [r["name"] for r in rows] == [f.name for f in dataclasses.fields(RunConfig)]
    assert all(r["doc"] and len(r["doc"]) > 10 for r in rows)
    assert RunConfig().validate()  # the defaults pass their own checks


@pytest.mark.parametrize(
    "name, value, words",
    [
        ("seed", 2**63, "must be an int in [0, 9223372036854774]"),
        ("seed", -1, "must be an int in [0"),
        ("max_length", 2, "must be an int >= 8"),
        ("epochs", 0.0, "must be > 0"),
        ("num_features", 0, "must be None (d log d) or an int from 1 to 4096"),
        ("feature_map", "relu", "valid: favor+, elu"),
        ("flash_backend", "fa3", "valid: auto, varlen, flash_attn, sdpa, math"),
        ("warmup_ratio", 1.0, "must be < 1"),
        ("max_grad_norm", float("nan"), "must be None (no clipping) or a finite number"),
        ("train_samples", 0, "must be None (all) or an int >= 1"),
        ("notes", [], "must be a dict"),
    ],
)
def test_each_parameter_is_checked_once_with_one_line(name, value, words):
    with pytest.raises(ValueError) as err:
        RunConfig(**{name: value}).validate()
    msg = str(err.value)
    assert msg.startswith(f"bad parameter {name}=") and words in msg and "\n" not in msg


def test_the_variant_table_decides_options_and_layouts():
    assert V.VARIANTS == ("baseline", "sdpa", "flash", "linear", "hybrid")
    assert RunConfig(variant="baseline").model_options() == {"attention_dropout": 0.0, "seed": 0}
    assert set(RunConfig(variant="hybrid").model_options()) == set(V.TABLE["hybrid"].options)
    assert RunConfig(variant="flash").resolved_layout() == V.TABLE["flash"].layout == "packed"
    assert V.TABLE["hybrid"].layer_plan(6, 2) == ["exact"] * 2 + ["linear"] * 4
    assert V.TABLE["hybrid"].layer_plan(6) == ["exact"] * 3 + ["linear"] * 3
    assert V.TABLE["sdpa"].layer_plan(6) is None


@pytest.mark.parametrize(
    "variant, options, words",
    [
        ("baseline", {"feature_map": "elu"}, "does not apply to variant 'baseline'"),
        ("flash", {"num_features": 64}, "does not apply to variant 'flash'"),
        ("linear", {"num_features": 0}, "bad option num_features=0"),
        ("linear", {"attention_dropout": 0.1}, "no probability matrix"),
        ("hybrid", {"bogus": 1}, "unknown option(s) bogus"),
        ("softmax", {}, "unknown variant 'softmax'"),
    ],
)
def test_build_options_are_refused_where_they_would_be_ignored(variant, options, words):
    with pytest.raises(ValueError) as err:
        V.check_options(variant, options)
    assert words in str(err.value)


def test_an_option_at_its_default_is_accepted_by_every_variant():
    for name in V.VARIANTS:
        V.check_options(name, dict(V.DEFAULTS))
