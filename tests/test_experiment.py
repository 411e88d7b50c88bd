"""The experiment around the models: configuration, training, records, the papermill sweep, the CLI,
aggregation into the results table, and the committed GPU records."""

import math
import os
import statistics
from pathlib import Path

import nbformat
import pytest
from helpers import campaign_plan, make_record
from scipy import stats

from attnpaper import VARIANTS
from attnpaper.__main__ import main, parse_set
from attnpaper.analysis.answer import PUBLISHED
from attnpaper.analysis.results import load_records, paired_ratio_vs_baseline, paired_vs_baseline, summarise
from attnpaper.analysis.tables import format_table
from attnpaper.experiment.records import REQUIRED, read_record, record_name, write_record
from attnpaper.experiment.run import run_and_record
from attnpaper.training.clock import LAUNCH_ENV
from attnpaper.training.config import SMOKE, RunConfig, hash_config
from attnpaper.training.loop import NonFiniteLoss, train

RESULTS = Path(__file__).resolve().parent.parent / PUBLISHED / "records"  # the campaign's main runs
ARMS = RESULTS.parent / "artefacts"  # its accuracy arms (fp16, attention dropout)


def leftover_tmp(folder):
    return sorted(p.name for p in Path(folder).rglob(".tmp-*"))


# --- RunConfig --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, max_pos, words",
    [
        ({"variant": "softmax"}, None, ["variant", "baseline, sdpa, flash, linear, hybrid"]),
        ({"max_length": 1024}, 512, ["max_length", "512 positions"]),
        ({"lr": 0}, None, ["lr", "> 0"]),
        ({"lr": -1e-5}, None, ["lr", "> 0"]),
        ({"schedule": "cosine"}, None, ["schedule", "linear, constant"]),
        ({"precision": "fp64"}, None, ["precision", "bf16, fp16, fp32, auto"]),
        ({"flash_backend": "triton"}, None, ["flash_backend", "auto, varlen, flash_attn, sdpa, math"]),
        ({"train_samples": 0}, None, ["train_samples", "None (all) or an int >= 1"]),
        ({"test_samples": 0}, None, ["test_samples", "None (all) or an int >= 1"]),
    ],
)
def test_validate_names_parameter_and_valid_values(changes, max_pos, words):
    with pytest.raises(ValueError) as err:
        RunConfig(**changes).validate(max_pos)
    msg = str(err.value)
    assert msg.startswith(f"bad parameter {next(iter(changes))}=")
    for w in words:
        assert w in msg


def test_validate_accepts_defaults_and_smoke():
    RunConfig().validate(512)
    RunConfig(**SMOKE).validate(512)
    RunConfig(max_length=512).validate(512)


def test_from_dict_rejects_unknown_keys():
    assert RunConfig.from_dict({"lr": 1e-4, "variant": "flash"}) == RunConfig(lr=1e-4, variant="flash")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) learning_rate, varient; valid: .*lr"):
        RunConfig.from_dict({"learning_rate": 1e-4, "varient": "flash"})


def test_config_hash():
    base = RunConfig().config_hash()
    assert RunConfig(variant="flash", seed=2, notes={"concurrent_runs": 4}).config_hash() == base
    assert RunConfig(lr=1e-4).config_hash() != base
    assert RunConfig(max_length=256).config_hash() != base
    assert record_name(RunConfig(variant="flash", seed=2)) == f"flash_seed2_{base}.json"


# --- training and records -------------------------------------------------------------------------------


def test_a_random_models_tokenizer_is_hashed_and_fingerprinted_only_when_set(monkeypatch, tmp_path):
    """$ATTNPAPER_TOKENIZER changes how a random-init model's runs tokenize: it joins the hash and the model
    fingerprint then, and only then (records made without it keep their hash); a model folder's own wins."""
    from attnpaper.experiment.fingerprint import fingerprints
    from attnpaper.training.config import TOKENIZER_ENV

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # file hashes cached here, not in ~/.cache
    monkeypatch.delenv(TOKENIZER_ENV, raising=False)
    tiny, folder = RunConfig(model="bert-tiny-random"), RunConfig(model=str(tmp_path))
    before = {c.model: (c.config_hash(), fingerprints(c)["model_fingerprint"]) for c in (tiny, folder)}
    assert tiny.hashed_dict() == tiny.to_dict() and before[tiny.model][1] == "alias:bert-tiny-random"
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    monkeypatch.setenv(TOKENIZER_ENV, str(tok))
    assert tiny.hashed_dict() == tiny.to_dict() | {"tokenizer": str(tok)}
    assert tiny.config_hash() == hash_config(tiny.hashed_dict()) != before[tiny.model][0]
    first = fingerprints(tiny)["model_fingerprint"]
    assert first.startswith("alias:bert-tiny-random+tokenizer:sha256:")
    (tok / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n")
    assert fingerprints(tiny)["model_fingerprint"] not in (first, before[tiny.model][1])
    assert (folder.config_hash(), fingerprints(folder)["model_fingerprint"]) == before[folder.model]
    assert record_name(tiny).endswith(f"_{tiny.config_hash()}.json")


def test_train_smoke_on_cpu():
    small = {**SMOKE, "epochs": 1, "train_samples": 160, "test_samples": 64}  # 5 steps, not the preset's 48
    r = train(RunConfig(**small), device="cpu", progress=False)
    assert 0 <= r["accuracy"] <= 1
    assert math.isfinite(r["train_time_s"]) and r["train_time_s"] > 0
    assert r["steps"] == math.ceil(160 / 32) == 5
    assert r["train_samples"] == 160 and r["test_samples"] == 64
    assert r["precision"] == "fp32" and r["peak_memory_mb"] is None  # CPU
    assert r["kernels"] == [["transformers eager"]] * 2  # bert-tiny-random has 2 layers
    assert all(math.isfinite(x) for x in r["loss_every_50_steps"])
    assert 0 <= r["padding_fraction"] < 1 and r["tokens_per_s"] > 0


def test_train_records_flash_kernels_per_layer():
    r = train(RunConfig(**{**SMOKE, "variant": "flash", "max_steps": 2, "eval": False}), device="cpu", progress=False)
    assert r["steps"] == 2 and r["accuracy"] is None
    assert len(r["kernels"]) == 2 and all(k and all(name.startswith("sdpa") for name in k) for k in r["kernels"])


def test_non_finite_loss_is_recorded_as_failed(tmp_path):
    cfg = RunConfig(**{**SMOKE, "lr": 1e30, "epochs": 1, "train_samples": 64})  # NaN by its second (last) step
    with pytest.raises(NonFiniteLoss, match="non-finite loss by step"):
        run_and_record(cfg, tmp_path, device="cpu", progress=False)
    path = tmp_path / record_name(cfg)
    rec = read_record(path)
    assert rec["status"] == "failed"
    assert rec["error"].startswith("NonFiniteLoss: non-finite loss by step")
    assert "NonFiniteLoss" in rec["traceback"]
    assert rec["lr"] == 1e30 and rec["config_hash"] == cfg.config_hash() and rec["accuracy"] is None
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # atomic: no .tmp-* left behind


def test_write_record_atomic(tmp_path):
    rec = make_record("baseline", 0, 0.8)
    path = write_record(rec, tmp_path / "deep" / "r.json")
    assert read_record(path) == rec
    write_record({**rec, "accuracy": 0.9}, path)  # replaces in place
    assert read_record(path)["accuracy"] == 0.9
    assert leftover_tmp(tmp_path) == []
    del rec["kernels"]
    write_record(rec, tmp_path / "bad.json")
    with pytest.raises(ValueError, match="lacks field.*kernels"):
        read_record(tmp_path / "bad.json")


# --- the papermill sweep ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    summary = sweep_quiet(["baseline", "flash"], [0], out, smoke=True)
    return out, summary


def sweep_quiet(*args, **kwargs):
    from attnpaper.experiment.sweep import sweep

    log = []
    return sweep(*args, log=log.append, **kwargs)


@pytest.mark.slow
def test_sweep_writes_records_and_notebooks(smoke_sweep):
    out, summary = smoke_sweep
    assert [s["status"] for s in summary] == ["ok", "ok"]
    for variant, s in zip(["baseline", "flash"], summary, strict=True):
        rec = read_record(s["record"])
        assert all(k in rec for k in REQUIRED)
        assert rec["variant"] == variant and rec["seed"] == 0 and rec["status"] == "ok" and rec["error"] is None
        assert rec["model"] == SMOKE["model"] and rec["data"] == "synthetic"
        assert rec["accuracy"] > 0.75 and rec["train_time_s"] > 0  # the smoke preset learns (chance: 0.5)
        assert rec["config_hash"] == RunConfig(**SMOKE).config_hash()
        assert len(rec["kernels"]) == 2
        # issue 38: timed from the sweep's launch of the kernel, so "start" holds the kernel's start and imports
        assert rec["time_parts_s"]["start"] > 0.5 and rec["end_to_end_s"] > rec["train_time_s"]
        nb = nbformat.read(s["notebook"], as_version=4)
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1
        assert f'variant = "{variant}"' in injected[0].source and "smoke = False" in injected[0].source
        assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
    assert leftover_tmp(out) == []
    assert LAUNCH_ENV not in os.environ  # set for each kernel only


@pytest.mark.slow
def test_sweep_skips_done_runs_and_force_reruns(smoke_sweep):
    out, first = smoke_sweep
    again = sweep_quiet(["baseline", "flash"], [0], out, smoke=True)
    assert [s["status"] for s in again] == ["skipped", "skipped"]
    assert [s["record"] for s in again] == [s["record"] for s in first]
    before = [Path(s["notebook"]).stat().st_mtime_ns for s in first]
    forced = sweep_quiet(["baseline", "flash"], [0], out, smoke=True, force=True)
    assert [s["status"] for s in forced] == ["ok", "ok"]
    assert all(read_record(s["record"])["status"] == "ok" for s in forced)
    assert len(list((out / "records").glob("*.json"))) == 2
    assert all(Path(s["notebook"]).stat().st_mtime_ns > t for s, t in zip(forced, before, strict=True))  # really rerun


@pytest.mark.slow
def test_a_reused_kernel_runs_the_runs_in_one_process_with_the_same_results(smoke_sweep, tmp_path):
    """sweep(reuse_kernel=True): the second run is its kernel's second (imports already done, so its "start"
    is short), each timed from its own launch, and both train exactly as in kernels of their own; a failed
    run ends the kernel, and the next run starts in a fresh one."""
    fresh_out, fresh = smoke_sweep
    summary = sweep_quiet(["baseline", "flash"], [0], tmp_path / "reuse", smoke=True, reuse_kernel=True)
    assert [s["status"] for s in summary] == ["ok", "ok"]
    recs = [read_record(s["record"]) for s in summary]
    assert [r["runs_before_in_process"] for r in recs] == [0, 1]
    assert recs[1]["time_parts_s"]["start"] < recs[0]["time_parts_s"]["start"]
    for rec, f in zip(recs, fresh, strict=True):
        want = read_record(f["record"])
        assert want["runs_before_in_process"] == 0
        assert rec["loss_every_50_steps"] == want["loss_every_50_steps"] and rec["accuracy"] == want["accuracy"]
    failing = sweep_quiet(
        ["baseline", "flash"], [0], tmp_path / "fail", smoke=True, reuse_kernel=True, overrides={"lr": 1e30}
    )
    assert [s["status"] for s in failing] == ["failed", "failed"]
    assert [read_record(s["record"])["runs_before_in_process"] for s in failing] == [0, 0]  # a fresh kernel each


def test_reuse_kernel_needs_the_launch_parameter(tmp_path):
    import nbformat

    from attnpaper.experiment.sweep import NOTEBOOK

    nb = nbformat.read(NOTEBOOK, as_version=4)
    for c in nb.cells:
        if "parameters" in c.metadata.get("tags", []):
            c.source = c.source.replace("launched_at: float = None", "")
    nbformat.write(nb, tmp_path / "old.ipynb")
    with pytest.raises(ValueError, match="--reuse-kernel needs a parameter launched_at in .*old.ipynb"):
        sweep_quiet(["baseline"], [0], tmp_path / "out", smoke=True, notebook=tmp_path / "old.ipynb", reuse_kernel=True)
    assert not (tmp_path / "out").exists()  # refused before the output folder was made


@pytest.mark.slow
def test_sweep_records_failed_runs_and_goes_on(tmp_path):
    summary = sweep_quiet(["baseline", "flash"], [0], tmp_path, smoke=True, overrides={"lr": 1e30})
    assert [s["status"] for s in summary] == ["failed", "failed"]  # the first failure did not stop the sweep
    for variant, s in zip(["baseline", "flash"], summary, strict=True):
        rec = read_record(s["record"])
        assert rec["variant"] == variant and rec["status"] == "failed"
        assert rec["error"].startswith("NonFiniteLoss: non-finite loss"), rec["error"]
        assert Path(s["notebook"]).exists() and s["notebook"].endswith(".failed.ipynb")


@pytest.mark.parametrize(
    "overrides, variants, words",
    [
        ({"learning_rate": 1e-4}, ["baseline"], "unknown parameter(s) learning_rate"),
        ({"lr": 0}, ["baseline"], "bad parameter lr=0"),
        ({}, ["baseline", "softmax"], "bad parameter variant='softmax'"),
    ],
)
def test_sweep_bad_overrides_raise_before_running(tmp_path, overrides, variants, words):
    with pytest.raises(ValueError) as err:
        sweep_quiet(variants, [0], tmp_path, overrides=overrides, smoke=True)
    assert words in str(err.value)
    assert list(tmp_path.iterdir()) == []  # nothing ran, nothing written


def test_sweep_nothing_to_run(tmp_path):
    with pytest.raises(ValueError, match="nothing to run"):
        sweep_quiet([], [0], tmp_path, smoke=True)


# --- CLI -------------------------------------------------------------------------------------------------


def test_cli_unknown_variant_exits_2(tmp_path, capsys):
    rc = main(["sweep", "--smoke", "--variants", "softmax", "--out", str(tmp_path / "out")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "softmax" in err and ", ".join(VARIANTS) in err
    assert not (tmp_path / "out").exists()


def test_parse_set():
    got = parse_set(
        [
            "lr=1e-4",
            "train_samples=None",
            "epochs=3",
            "notes={'concurrent_runs': 4}",
            "data=../shared/data/imdb",
            "model=bundle/all-MiniLM-L6-v2-fp16",
            "eval=False",
            "feature_map=favor+",
            "x=a=b",
        ]
    )
    assert got == {
        "lr": 1e-4,
        "train_samples": None,
        "epochs": 3,
        "notes": {"concurrent_runs": 4},
        "data": "../shared/data/imdb",
        "model": "bundle/all-MiniLM-L6-v2-fp16",
        "eval": False,
        "feature_map": "favor+",
        "x": "a=b",
    }
    assert parse_set(None) == {}
    with pytest.raises(ValueError, match="name=value"):
        parse_set(["lr"])


def test_cli_table(tmp_path, capsys):
    write_records(tmp_path, [make_record("baseline", 0, 0.8), make_record("flash", 0, 0.81)])
    assert main(["table", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "baseline" in out and "flash" in out
    assert main(["table", str(tmp_path / "empty")]) == 2
    assert "no records" in capsys.readouterr().err


# --- aggregation -----------------------------------------------------------------------------------------


def write_records(folder, recs):
    for r in recs:
        write_record(r, Path(folder) / "records" / f"{r['variant']}_seed{r['seed']}_{r['config_hash']}.json")


BASE = [0.850, 0.862, 0.847, 0.871]
FLASH = [0.853, 0.858, 0.851, 0.880]


@pytest.fixture
def four_seeds(tmp_path):
    recs = [make_record("baseline", s, a) for s, a in enumerate(BASE)]
    recs += [make_record("flash", s, a) for s, a in enumerate(FLASH)]
    recs.append(make_record("flash", 9, None, status="failed"))
    write_records(tmp_path, recs)
    return load_records(tmp_path)


def test_summarise_mean_std_and_failed(four_seeds):
    table = summarise(four_seeds).set_index("variant")
    assert list(table.index) == ["baseline", "flash"]
    for v, accs, failed in [("baseline", BASE, 0), ("flash", FLASH, 1)]:
        row = table.loc[v]
        assert row["n"] == 4 and row["failed"] == failed
        assert row["acc_mean"] == pytest.approx(statistics.mean(accs))
        assert row["acc_std"] == pytest.approx(statistics.stdev(accs))  # sample std (n - 1)
        assert row["train_time_s"] == pytest.approx(101.5)


def test_paired_vs_baseline_t_interval(four_seeds):
    out = paired_vs_baseline(four_seeds).set_index("variant")
    d = [f - b for f, b in zip(FLASH, BASE, strict=True)]
    n = len(d)
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(d) / math.sqrt(n)
    row = out.loc["flash"]
    assert row["n_pairs"] == n
    assert row["diff_mean"] == pytest.approx(statistics.mean(d))
    assert row["ci_low"] == pytest.approx(statistics.mean(d) - half)
    assert row["ci_high"] == pytest.approx(statistics.mean(d) + half)
    assert stats.t.ppf(0.975, 3) == pytest.approx(3.182446, abs=1e-6)


def test_paired_ratio_geometric_mean_and_t_interval_on_logs(tmp_path):
    """Time and memory as ratios to baseline: a paired t interval on log ratios, mapped back; a concurrent
    run's time is left out (it did not have the GPU alone), its memory is kept."""
    base_t, flash_t, flash_mb = [10.0, 12.0, 11.0], [8.0, 9.0, 9.5], [800.0, 820.0, 810.0]
    recs = [make_record("baseline", s, 0.85, train_time_excl_compile_s=t) for s, t in enumerate(base_t)]
    recs += [
        make_record("flash", s, 0.85, train_time_excl_compile_s=t, peak_memory_mb=m)
        for s, (t, m) in enumerate(zip(flash_t, flash_mb, strict=True))
    ]
    recs += [make_record("baseline", 3, 0.85, train_time_excl_compile_s=1.0, notes={"concurrent_runs": 4})]
    recs += [make_record("flash", 3, 0.85, train_time_excl_compile_s=1.0, peak_memory_mb=900.0)]
    write_records(tmp_path, recs)
    loaded = load_records(tmp_path)
    logs = [math.log(f / b) for f, b in zip(flash_t, base_t, strict=True)]
    half = stats.t.ppf(0.975, 2) * statistics.stdev(logs) / math.sqrt(3)
    row = paired_ratio_vs_baseline(loaded, "train_time_excl_compile_s").set_index("variant").loc["flash"]
    assert row["n_pairs"] == 3
    assert row["ratio"] == pytest.approx(math.exp(statistics.mean(logs)))
    assert row["ci_low"] == pytest.approx(math.exp(statistics.mean(logs) - half))
    assert row["ci_high"] == pytest.approx(math.exp(statistics.mean(logs) + half))
    mem = paired_ratio_vs_baseline(loaded, "peak_memory_mb").set_index("variant").loc["flash"]
    assert mem["n_pairs"] == 4  # memory pairs the concurrent run's seed too
    assert mem["ratio"] == pytest.approx(math.exp(statistics.mean([math.log(m / 1000) for m in flash_mb + [900]])))
    with pytest.raises(ValueError, match="unknown ratio metric 'accuracy'; valid: train_time_excl_compile_s"):
        paired_ratio_vs_baseline(loaded, "accuracy")
    shown = format_table(loaded, "markdown")
    assert "time excl. compile vs baseline [95% CI]" in shown and "time with compile vs baseline [95% CI]" in shown
    assert "memory vs baseline [95% CI]" in shown
    assert f"{math.exp(statistics.mean(logs)):.2f}x [{row['ci_low']:.2f}, {row['ci_high']:.2f}]" in shown


def test_paired_only_shared_seeds(tmp_path):
    write_records(
        tmp_path,
        [
            make_record("baseline", 0, 0.80),
            make_record("baseline", 1, 0.82),
            make_record("flash", 1, 0.85),
            make_record("flash", 2, 0.90),
        ],
    )
    row = paired_vs_baseline(load_records(tmp_path)).iloc[0]
    assert row["n_pairs"] == 1 and row["diff_mean"] == pytest.approx(0.03) and math.isnan(row["ci_low"])


def test_two_config_hashes_never_mixed(tmp_path):
    write_records(
        tmp_path,
        [
            make_record("baseline", s, 0.8 + s / 100, config_hash=h)
            for s in range(2)
            for h in ("aaaaaaaaaaaa", "bbbbbbbbbbbb")
        ]
        + [make_record("flash", 0, 0.9, config_hash="bbbbbbbbbbbb")],
    )
    recs = load_records(tmp_path)
    with pytest.raises(ValueError, match="records from 2 configurations/devices"):
        paired_vs_baseline(recs)
    table = summarise(recs)
    assert len(table) == 3
    for _, row in table.iterrows():
        src = recs[(recs.config_hash == row.config_hash) & (recs.variant == row.variant)]
        assert row["n"] == len(src) and row["acc_mean"] == pytest.approx(src["accuracy"].mean())
    # one configuration at a time pairs fine
    one = paired_vs_baseline(recs[recs.config_hash == "bbbbbbbbbbbb"])
    assert one.iloc[0]["diff_mean"] == pytest.approx(0.1)


def test_load_records_refuses_duplicates_and_empty(tmp_path):
    rec = make_record("baseline", 0, 0.8)
    write_record(rec, tmp_path / "a" / "records" / "x.json")
    write_record(rec, tmp_path / "b" / "copy.json")  # a folder of *.json without records/
    assert len(load_records(tmp_path / "a")) == len(load_records(tmp_path / "b")) == 1
    with pytest.raises(ValueError, match=r"the same \(configuration, variant, seed\) recorded twice"):
        load_records(tmp_path / "a", tmp_path / "b")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no records"):
        load_records(tmp_path / "empty")


def test_summarise_counts_failures_recorded_by_the_sweep(tmp_path):
    from attnpaper.experiment.records import save_result
    from attnpaper.experiment.sweep import _failed_record

    cfg = RunConfig(**{**SMOKE, "seed": 1})  # a run whose kernel died before it could write its record
    write_records(
        tmp_path,
        [make_record("baseline", 0, 0.8, model=cfg.model, max_length=cfg.max_length, config_hash=cfg.config_hash())],
    )
    rec_path = tmp_path / "records" / record_name(cfg)
    save_result(_failed_record(cfg, tmp_path / "nowhere.json", RuntimeError("Kernel died")), rec_path)
    recs = load_records(tmp_path)
    assert (recs["status"] == "failed").sum() == 1
    assert summarise(recs)["failed"].sum() == 1


def test_summarise_accepts_records_without_notes(tmp_path):
    old = make_record("baseline", 1, 0.82)
    del old["notes"]
    write_records(tmp_path, [make_record("baseline", 0, 0.8), old])
    assert summarise(load_records(tmp_path)).iloc[0]["n"] == 2


# --- the committed GPU records ----------------------------------------------------------------------------

GPU_RECORDS = sorted(RESULTS.glob("*.json")) + sorted(ARMS.glob("*/records/*.json"))


NOT_YET_RUN = ("nomask", "elu", "favor4x")
"""Arms campaign_left.py plans that have no GPU records yet (issue 39's): left out of the check below until
their records are committed, when ``test_arms_not_yet_run_have_no_records`` asks to take them out of here."""


def test_gpu_records_present():
    """Every (variant, seed) the campaign planned at 128 tokens, main runs and arms, has its record."""
    plan = {
        (folder, v, s)
        for (length, arm), (folder, variants, seeds) in campaign_plan().items()
        if length == "128" and arm not in NOT_YET_RUN
        for v in variants
        for s in seeds
    }
    recs = {p: read_record(p) for p in GPU_RECORDS}
    have = {(p.parent.relative_to(RESULTS.parent).as_posix(), r["variant"], r["seed"]) for p, r in recs.items()}
    assert plan <= have, sorted(plan - have)


def test_arms_not_yet_run_have_no_records():
    """NOT_YET_RUN names planned arms only, and none with committed records (those the check above covers)."""
    plan = campaign_plan()
    for arm in NOT_YET_RUN:
        folder = RESULTS.parent / plan["128", arm][0]
        assert not list(folder.glob("*.json")), f"{arm}'s records are in: take it out of NOT_YET_RUN"


@pytest.mark.parametrize("path", GPU_RECORDS, ids=lambda p: p.stem)
def test_gpu_record_intact(path):
    rec = read_record(path)
    assert rec["status"] == "ok" and rec["error"] is None
    assert rec["device"].startswith("NVIDIA")
    assert len(rec["git_sha"]) == 40 and all(c in "0123456789abcdef" for c in rec["git_sha"])
    assert path.name == f"{rec['variant']}_seed{rec['seed']}_{rec['config_hash']}.json"
    # the hash is over the configuration as given (its "config"); the record's own fields hold what it
    # resolved to: 'auto' precision, step mode and layout, and sample counts of None (all)
    cfg = rec["config"]
    assert rec["config_hash"] == hash_config(cfg)
    assert {k for k in cfg if cfg[k] != rec[k]} <= {"precision", "step_mode", "layout", "train_samples", "test_samples"}
    fp16 = path.parent.parent.name == "fp16"  # the arm that set precision=fp16; the others left it at auto
    assert rec["precision"] == ("fp16" if fp16 else "bf16") and rec["train_samples"] == rec["test_samples"] == 25_000
    assert rec["step_mode"] == "whole"
    assert 0.5 < rec["accuracy"] <= 1 and rec["train_time_s"] > 0 and rec["peak_memory_mb"] > 0
    kernels = rec["kernels"]
    assert isinstance(kernels, list) and len(kernels) >= 1 and all(isinstance(k, list) and k for k in kernels)
    flash = ["varlen" in k or "sdpa FLASH" in k for k in sum(kernels, [])]
    per_layer_flash = [any("varlen" in k or "sdpa FLASH" in k for k in layer) for layer in kernels]
    per_layer_linear = [any(k.startswith("linear") for k in layer) for layer in kernels]
    if rec["variant"] == "baseline":
        assert all(layer == ["transformers eager"] for layer in kernels)
    elif rec["variant"] == "sdpa":
        assert all(layer == ["transformers sdpa"] for layer in kernels)
    elif rec["variant"] == "flash":
        assert all(per_layer_flash) and not any(per_layer_linear)
    elif rec["variant"] == "linear":
        assert all(per_layer_linear) and not any(flash)
    elif rec["variant"] == "hybrid":
        k = rec["hybrid_layers"] if rec["hybrid_layers"] is not None else len(kernels) // 2
        assert per_layer_flash == [True] * k + [False] * (len(kernels) - k)
        assert per_layer_linear == [False] * k + [True] * (len(kernels) - k)


def test_gpu_records_one_configuration():
    recs = load_records(RESULTS)
    assert recs["config_hash"].nunique() == 1 and recs["device"].nunique() == 1
    assert len(paired_vs_baseline(recs)) == 4  # sdpa, flash, linear, hybrid against baseline


def test_cli_non_numeric_parameter_is_a_clear_error(capsys):
    from attnpaper.__main__ import main

    assert main(["sweep", "--smoke", "--variants", "baseline", "--seeds", "0", "--set", "lr=abc"]) == 2
    assert "bad parameter lr='abc': must be a finite number" in capsys.readouterr().err


def test_a_misspelt_papermill_parameter_is_refused_in_one_line(tmp_path):
    """papermill only warns about a parameter the notebook lacks and runs with the defaults; the notebook
    refuses it before any work, and the error's last line names it and the valid ones (issue 37)."""
    import papermill as pm

    nb = Path(__file__).resolve().parent.parent / "chapters" / "07_experiment.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(
            str(nb), str(tmp_path / "out.ipynb"), parameters={"lr_rate": 1e-4}, cwd=str(nb.parent), progress_bar=False
        )
    assert err.value.ename == "ValueError"
    assert err.value.evalue.startswith("unknown parameter(s) lr_rate; valid: ") and " lr, " in err.value.evalue
    assert not (tmp_path / "records").exists()
