"""attnpaper as the Hugging Face and Jupyter ecosystems expect it: reloadable models, Trainer, datasets'
cache, papermill parameters, tables to paste, and a command line that answers quickly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoModelForSequenceClassification, DistilBertConfig

import attnpaper
from attnpaper.attention import LayerAttention, redraw_features
from attnpaper.training.config import SMOKE, RunConfig

ROOT = Path(__file__).resolve().parent.parent
TINY_DISTILBERT = DistilBertConfig(dim=64, n_layers=2, n_heads=4, hidden_dim=128)


def _inputs():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize(
    "model", ["bert-tiny-random", TINY_DISTILBERT, "roberta-tiny-random"], ids=["bert", "distilbert", "roberta"]
)
@pytest.mark.parametrize("variant", attnpaper.VARIANTS)
def test_save_and_from_pretrained_restore_the_variant(model, variant, tmp_path):
    opts = {"redraw_every": 1, "num_features": 24, "seed": 3} if variant in ("linear", "hybrid") else {}
    clf = attnpaper.build_model(model, variant, **opts).eval()
    if opts:  # trained with redraws: the features are no longer the seed's first draw
        assert redraw_features(clf, 1) > 0
    with torch.no_grad():
        before = clf(**_inputs()).logits
    clf.save_pretrained(tmp_path)
    back = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        after = back(**_inputs()).logits
    plain = variant in ("baseline", "sdpa")  # transformers' own attention: saved as a plain transformers model
    assert type(back) is (type(clf).__bases__[-1] if plain else type(clf))
    assert back.config.attnpaper == clf.config.attnpaper
    assert back.config._attn_implementation == clf.config._attn_implementation
    assert torch.equal(before, after)  # the same model: bitwise the same logits
    assert attnpaper.kernels_used(back) == attnpaper.kernels_used(clf)
    for a, b in zip(clf.modules(), back.modules(), strict=True):
        if isinstance(a, LayerAttention) and a.proj.numel():
            fresh = LayerAttention("linear", a.head_dim, num_features=24, seed=0).proj
            assert torch.equal(a.proj, b.proj) and a.proj.shape == fresh.shape


def test_pretrained_weights_still_load(tmp_path):
    base = AutoModelForSequenceClassification.from_pretrained(attnpaper.offline_model_dir(), num_labels=2)
    ours = attnpaper.build_model("minilm-offline", "linear")
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(dict(base.named_parameters())[name], dict(ours.named_parameters())[name])


# a training run per variant: hybrid (exact and linear layers in one model) in the fast tier, the rest slow
TRAINER_VARIANTS = [v if v == "hybrid" else pytest.param(v, marks=pytest.mark.slow) for v in attnpaper.VARIANTS]


@pytest.mark.parametrize("variant", TRAINER_VARIANTS)
def test_trainer_trains_each_variant(variant, tmp_path):
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from attnpaper.training.data import synthetic_corpus
    from attnpaper.training.loop import load_tokenizer

    tok = load_tokenizer("bert-tiny-random")
    texts, labels = synthetic_corpus(256, seed=0)
    ds = Dataset.from_dict({"text": texts, "label": labels.tolist()}).map(
        lambda b: tok(b["text"], truncation=True, max_length=64), batched=True, remove_columns=["text"]
    )
    model = attnpaper.build_model("bert-tiny-random", variant)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=24,
        per_device_train_batch_size=16,
        learning_rate=2e-3,
        logging_steps=4,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tok))
    result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert np.isfinite(result.training_loss) and losses[-1] < losses[0], losses
    if variant not in ("baseline", "sdpa"):
        assert attnpaper.kernels_used(model)[0]  # our kernels ran inside Trainer's loop


def test_max_grad_norm_clips_and_is_recorded(monkeypatch):
    import attnpaper.training.step as S
    from attnpaper.training.loop import train

    calls = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(S.torch.nn.utils, "clip_grad_norm_", lambda p, n, **k: calls.append(n) or real(p, n, **k))
    cfg = RunConfig(**{**SMOKE, "train_samples": 64, "epochs": 1, "eval": False, "max_grad_norm": 1.0})
    train(cfg, progress=False)
    assert calls and set(calls) == {1.0}
    assert RunConfig(**SMOKE).config_hash() == RunConfig(**SMOKE, max_grad_norm=None).config_hash()
    assert cfg.config_hash() != RunConfig(**{**SMOKE, "train_samples": 64, "epochs": 1, "eval": False}).config_hash()


def test_schedule_is_transformers_with_trainers_warmup():
    from transformers import get_linear_schedule_with_warmup

    from attnpaper.training.assemble import make_scheduler

    def lrs(sched, opt, n=25):
        out = []
        for _ in range(n):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    p = [torch.nn.Parameter(torch.zeros(1))]
    a, b = torch.optim.AdamW(p, lr=1.0), torch.optim.AdamW(p, lr=1.0)
    ours = lrs(make_scheduler(a, "linear", 0.1, 25), a)
    theirs = lrs(get_linear_schedule_with_warmup(b, 3, 25), b)  # Trainer: ceil(0.1 x 25) = 3 warm-up steps
    assert ours == theirs and ours[0] == 0.0


# --- datasets' cache ---------------------------------------------------------------------------------------


class CountingTokenizer:
    """A tokenizer that counts its calls (everything else is the wrapped tokenizer's)."""

    def __init__(self, tok):
        self.tok, self.calls = tok, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tok(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tok, name)


def test_tokenised_data_is_cached_between_runs(tmp_path):
    from attnpaper.training import data as D
    from attnpaper.training.loop import load_tokenizer

    root = tmp_path / "imdb"
    root.mkdir()
    corpus = {split: D.synthetic_corpus(300, seed=5 + i) for i, split in enumerate(D.SPLITS)}  # two splits
    for split, (texts, labels) in corpus.items():
        pq.write_table(pa.table({"text": texts, "label": labels.tolist()}), root / f"{split}.parquet")
    texts, labels = corpus["train"]
    tok = CountingTokenizer(load_tokenizer("bert-tiny-random"))
    first = D.load_splits(str(root), tok, 32, train_samples=100)
    assert tok.calls > 0 and len(first["train"]) == 100
    tok.calls = 0
    again = D.load_splits(str(root), tok, 32, train_samples=100)
    assert tok.calls == 0  # read from datasets' cache, not tokenised again
    assert again["train"].ids == first["train"].ids and (again["test"].labels == first["test"].labels).all()
    D.load_splits(str(root), tok, 16)
    assert tok.calls > 0  # another max_length: another cache entry
    direct = D.tokenize(*D.subsample(texts, labels, 100), tok.tok, 32)
    assert direct.ids == first["train"].ids  # the same tokens as tokenising by hand


# --- papermill as users run it -----------------------------------------------------------------------------


@pytest.mark.slow
def test_papermill_parameters_win_over_the_smoke_preset(tmp_path):
    import papermill as pm

    out = pm.execute_notebook(
        str(ROOT / "chapters" / "07_experiment.ipynb"),
        str(tmp_path / "out.ipynb"),
        parameters={
            "smoke": True,
            "lr": 0.005,
            "max_length": 16,
            "train_samples": 64,
            "output_dir": str(tmp_path / "records"),
        },
        progress_bar=False,
        cwd=str(ROOT / "chapters"),
    )
    rec = json.loads(next((tmp_path / "records").glob("*.json")).read_text())
    assert rec["lr"] == 0.005 and rec["max_length"] == 16 and rec["train_samples"] == 64  # given: kept
    assert rec["model"] == SMOKE["model"] and rec["data"] == "synthetic"  # left as None: the preset's
    said = "".join(o.get("text", "") for c in out.cells for o in c.get("outputs", []))
    assert f"ok -> {tmp_path / 'records'}" in said


def test_notebook_parameters_have_types_and_defaults(monkeypatch, tmp_path):
    from papermill.inspection import inspect_notebook

    params = inspect_notebook(str(ROOT / "chapters" / "07_experiment.ipynb"))
    assert params["lr"]["inferred_type_name"] == "float" and params["variant"]["default"] == '"baseline"'
    assert set(params) >= set(RunConfig.__dataclass_fields__) | {"smoke", "output_dir", "fresh"}
    monkeypatch.setenv("ATTNPAPER_IMDB", str(tmp_path))
    given = {name: None if name in SMOKE else getattr(RunConfig(), name) for name in RunConfig.__dataclass_fields__}
    assert RunConfig.from_parameters({**given, "notes": {}}, smoke=False).data == str(tmp_path)
    assert RunConfig.from_parameters({**given, "notes": {}}, smoke=True).data == "synthetic"


def test_default_output_dir_is_in_the_checkout():
    from attnpaper.experiment.records import default_output_dir

    assert default_output_dir(smoke=True) == ROOT / "results" / "smoke" / "records"
    assert default_output_dir() == ROOT / "results" / "local" / "records"


# --- tables and the command line ---------------------------------------------------------------------------


def _records(tmp_path):
    from attnpaper.experiment.records import REQUIRED, write_record

    cfg = RunConfig(model="m", data="d")
    for variant, accs in (("baseline", [0.85, 0.86, 0.84]), ("flash", [0.851, 0.858, 0.843])):
        for seed, acc in enumerate(accs):
            rec = (
                {k: None for k in REQUIRED}
                | cfg.to_dict()
                | {
                    "variant": variant,
                    "seed": seed,
                    "accuracy": acc,
                    "status": "ok",
                    "device": "H100",
                    "config_hash": cfg.config_hash(),
                    "train_time_s": 20.123 + seed,
                    "peak_memory_mb": 1234.56,
                    "tokens_per_s": 1.0,
                    "kernels": [],
                }
            )
            write_record(rec, tmp_path / "records" / f"{variant}_{seed}.json")
    return tmp_path


@pytest.mark.parametrize(
    "fmt, marker", [("markdown", "|:"), ("latex", r"\toprule"), ("csv", "diff_pts"), ("text", "vs baseline")]
)
def test_table_formats(fmt, marker, tmp_path, capsys):
    from attnpaper.__main__ import main

    assert main(["table", str(_records(tmp_path)), "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert marker in out
    if fmt == "csv":
        df = pd.read_csv(pd.io.common.StringIO(out))
        flash = df[df["variant"] == "flash"].iloc[0]
        assert flash["n"] == 3 and flash["n_pairs"] == 3
        assert flash["diff_pts"] == pytest.approx(100 * (0.001 - 0.002 + 0.003) / 3, abs=1e-4)
        assert flash["ci95_low"] < flash["diff_pts"] < flash["ci95_high"] and flash["train_time_s"] == 21.1
    else:
        assert "0.8500" in out and "0.0100" in out and "1235" in out and "20.123" not in out  # rounded


def test_cli_help_imports_neither_torch_nor_transformers():
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "attnpaper", "sweep", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0 and "(default: 0.1" not in proc.stdout
    assert "--keep-checkpoints" in proc.stdout and "(default: results/local)" in proc.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "transformers" not in imported


def test_cli_version():
    proc = subprocess.run(
        [sys.executable, "-m", "attnpaper", "--version"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert proc.stdout.strip() == f"attnpaper {attnpaper.__version__}"


def _trainer_redraws(tmp_path, accumulate, callbacks):
    """Train a linear model with redraw_every=2 under Trainer for 6 optimizer steps; return, per step, a
    fingerprint of layer 0's FAVOR+ projection as it was when that step began."""
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    from attnpaper.attention import LayerAttention
    from attnpaper.training.data import synthetic_corpus
    from attnpaper.training.loop import load_tokenizer

    tok = load_tokenizer("bert-tiny-random")
    texts, labels = synthetic_corpus(64, seed=0)
    ds = Dataset.from_dict({"text": texts, "label": labels.tolist()}).map(
        lambda b: tok(b["text"], truncation=True, max_length=32), batched=True, remove_columns=["text"]
    )
    model = attnpaper.build_model("bert-tiny-random", "linear", redraw_every=2)
    layer = next(m for m in model.modules() if isinstance(m, LayerAttention))
    seen = []

    class Look(TrainerCallback):  # after RedrawFeatures: the projection the step's forwards start from
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(float(layer.proj.sum()))

    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=6,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=accumulate,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    collate = DataCollatorWithPadding(tok)
    Trainer(model=model, args=args, train_dataset=ds, data_collator=collate, callbacks=[*callbacks, Look()]).train()
    return seen


def _favor_layers():
    return _favor_layers_of(attnpaper.build_model("bert-tiny-random", "linear", redraw_every=2))


@pytest.mark.slow  # two Trainer runs, about 25 s
def test_redraw_every_redraws_under_trainer(tmp_path):
    """redraw_every counts under transformers.Trainer too: uncompiled, by training forwards on its own, and
    with gradient accumulation by optimizer steps through the RedrawFeatures callback (issue 37)."""
    from attnpaper.training.trainer import RedrawFeatures

    alone = _trainer_redraws(tmp_path / "a", 1, [])
    assert len(set(alone)) == 3 and alone[0] == alone[1] != alone[2] == alone[3] != alone[4]  # redrawn at 2, 4
    counted = RedrawFeatures()
    steps = _trainer_redraws(tmp_path / "b", 2, [counted])
    assert len(set(steps)) == 3 and steps[0] == steps[1] != steps[2] == steps[3] != steps[4]
    assert counted.redrawn == 2 * len(_favor_layers())  # at steps 2 and 4, in every FAVOR+ layer


def test_an_uncompiled_training_forward_counts_towards_a_redraw():
    """Without attnpaper's loop, training forwards count towards redraw_every; evaluation does not, and a
    loop that calls redraw_at owns the schedule (the count starts again)."""
    model = attnpaper.build_model("bert-tiny-random", "linear", redraw_every=2)
    layer = _favor_layers_of(model)[0]
    batch = {"input_ids": torch.randint(5, 100, (2, 8)), "attention_mask": torch.ones(2, 8, dtype=torch.long)}
    before = layer.proj.clone()
    model.eval()
    for _ in range(3):
        model(**batch)
    assert torch.equal(layer.proj, before)  # evaluation never redraws
    model.train()
    model(**batch)
    model(**batch)
    assert torch.equal(layer.proj, before)  # steps 0 and 1
    model(**batch)
    assert not torch.equal(layer.proj, before)  # before step 2
    now = layer.proj.clone()
    layer.redraw_at(3)  # a loop's schedule (3 is not a redraw step): the forward count starts again
    model(**batch)
    model(**batch)  # the 2nd forward since: no redraw (without the reset it would be the 2nd after one)
    assert torch.equal(layer.proj, now)


def _favor_layers_of(model):
    from attnpaper.attention import LayerAttention

    return [m for m in model.modules() if isinstance(m, LayerAttention) and m.redraws]
