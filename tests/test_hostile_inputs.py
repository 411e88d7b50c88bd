"""Inputs that would train on nothing or fail inside each run, refused by the pre-run check in one line.

A model folder without tokenizer files, with missing or garbage weights, empty or broken; data with
one class, fewer rows than a batch, or no text; a seed that overflows; each named before any run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import BertConfig, BertTokenizer

import attnpaper
from attnpaper.experiment.checks import check_data, check_plan
from attnpaper.training import data as D
from attnpaper.training.config import SMOKE, RunConfig
from attnpaper.variants import MAX_SEED

TINY = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def refused(words, **params) -> str:
    """check_plan refuses a smoke run with ``params`` in one line holding ``words``; the line."""
    with pytest.raises(ValueError) as err:
        check_plan([RunConfig(**{**SMOKE, **params})])
    line = str(err.value)
    assert "\n" not in line and all(w in line for w in words), line
    return line


@pytest.fixture(scope="module")
def good_model(tmp_path_factory) -> Path:
    """A tiny BERT saved as save_pretrained writes it, with MiniLM's tokenizer beside it."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("model") / "good"
    attnpaper.build_model(TINY, "baseline").save_pretrained(root)
    AutoTokenizer.from_pretrained(attnpaper.offline_model_dir()).save_pretrained(root)
    return root


def copy_without(src: Path, dst: Path, *patterns) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*patterns))
    return dst


# --- model folders -------------------------------------------------------------------------------------


def test_a_whole_model_folder_passes(good_model):
    check_plan([RunConfig(**{**SMOKE, "model": str(good_model)})])


def test_model_folder_without_tokenizer_files_is_refused(good_model, tmp_path):
    folder = copy_without(good_model, tmp_path / "notok", "tokenizer*", "vocab*", "special_tokens*")
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(folder)) < 10  # what a run would have trained with: all [UNK]
    refused(["bad parameter model=", "tokenizer", "vocabulary of", "tokenizer's files"], model=str(folder))


def test_tokenizer_that_knows_no_english_is_refused(good_model, tmp_path):
    folder = copy_without(good_model, tmp_path / "zz", "tokenizer*", "vocab*", "special_tokens*")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"zz{i}" for i in range(30517)]
    BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}).save_pretrained(folder)
    refused(["tokenizer", "is unknown to it"], model=str(folder))


def test_tokenizer_beyond_the_embeddings_is_refused(tmp_path):
    from transformers import AutoTokenizer

    folder = tmp_path / "small-vocab"
    small = BertConfig(
        vocab_size=2000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    attnpaper.build_model(small, "baseline").save_pretrained(folder)
    AutoTokenizer.from_pretrained(attnpaper.offline_model_dir()).save_pretrained(folder)
    refused(["30522 tokens, more than the model's 2000 embeddings"], model=str(folder))


def test_missing_weights_are_refused(good_model, tmp_path):
    folder = copy_without(good_model, tmp_path / "noweights", "*.safetensors")
    refused([f"the model folder {folder} has config.json but no weights"], model=str(folder))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_garbage_safetensors_are_refused(damage, good_model, tmp_path):
    folder = copy_without(good_model, tmp_path / damage)
    weights = folder / "model.safetensors"
    if damage == "garbage":
        weights.write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:5000])
    else:
        weights.write_bytes(b"")
    refused([f"{weights} is not a valid safetensors file"], model=str(folder))


def test_garbage_pytorch_bin_is_refused(good_model, tmp_path):
    folder = copy_without(good_model, tmp_path / "bin", "*.safetensors")
    (folder / "pytorch_model.bin").write_text("not weights")
    refused(["pytorch_model.bin is not a PyTorch weights file"], model=str(folder))


def test_empty_and_broken_model_folders_are_named_as_such(good_model, tmp_path):
    (tmp_path / "empty").mkdir()
    refused([f"the model folder {tmp_path / 'empty'} is empty"], model=str(tmp_path / "empty"))
    noconfig = copy_without(good_model, tmp_path / "noconfig", "config.json")
    refused(["has no config.json", "a folder as save_pretrained writes it"], model=str(noconfig))
    broken = copy_without(good_model, tmp_path / "broken")
    (broken / "config.json").write_text('{"model_type": ')
    line = refused([f"{broken / 'config.json'} is not a readable transformers config"], model=str(broken))
    assert "not a local directory" not in line


def test_seed_too_large_for_the_layer_seeds_is_refused():
    check_plan([RunConfig(**{**SMOKE, "seed": MAX_SEED})])
    refused(["bad parameter seed="], seed=MAX_SEED + 1)
    refused(["bad parameter seed="], seed=2**64)


def test_refused_before_any_run(good_model, tmp_path, capsys):
    from attnpaper.__main__ import main

    folder = copy_without(good_model, tmp_path / "notok", "tokenizer*", "vocab*", "special_tokens*")
    out = tmp_path / "out"
    rc = main(
        ["sweep", "--smoke", "--variants", "baseline", "--seeds", "0", "--out", str(out), "--set", f"model={folder}"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "tokenizer" in err[0], err
    assert not list(out.rglob("*.json")) and not list(out.rglob("*.ipynb"))  # nothing ran, nothing recorded


# --- degenerate data -----------------------------------------------------------------------------------


def write_imdb(root: Path, train: dict, test: dict | None = None) -> str:
    root.mkdir(parents=True, exist_ok=True)
    test = test or {"text": [f"{t} (test)" for t in train["text"]], "label": train["label"]}  # other reviews
    for split, cols in (("train", train), ("test", test)):
        pq.write_table(pa.table(cols), root / f"{split}.parquet")
    return str(root)


def two_class(n):
    return {"text": [f"a fine film {i}" for i in range(n)], "label": [i % 2 for i in range(n)]}


def test_train_parquet_that_is_a_folder_is_refused(tmp_path):
    root = Path(write_imdb(tmp_path / "imdb", two_class(40)))
    (root / "train.parquet").unlink()
    (root / "train.parquet").mkdir()
    for call in (lambda: check_data(str(root)), lambda: D.read_texts(str(root))):
        with pytest.raises(ValueError, match=r"train\.parquet is a folder, not a parquet file"):
            call()


def test_one_class_is_refused(tmp_path):
    data = write_imdb(tmp_path / "imdb", {"text": ["good"] * 40, "label": [1] * 40}, two_class(40))
    line = refused(["train.parquet: every row has label 1", "both labels"], data=data)
    assert "\n" not in line
    line = refused(
        ["bad parameter train_samples=1:", "all have label", "valid: rows of both labels"], train_samples=1
    )  # the synthetic corpus has both; one row of it cannot
    assert "1 train row(s) of 2000" in line


def test_fewer_rows_than_a_batch_are_refused(tmp_path):
    refused(
        ["bad parameter train_samples=16:", "fewer than one batch (batch_size=32)", "valid: at least 32"],
        train_samples=16,
    )
    data = write_imdb(tmp_path / "imdb", two_class(10))
    refused([f"bad parameter data={data!r}:", "10 train row(s)", "batch_size=32"], data=data)
    check_plan([RunConfig(**{**SMOKE, "data": data, "batch_size": 8})])  # the same data, a batch that fits


def test_all_empty_reviews_are_refused(tmp_path):
    empty = {"text": ["", "  ", "\n"] * 14, "label": [0, 1] * 21}
    data = write_imdb(tmp_path / "blank", empty, two_class(40))
    refused(["train.parquet: every review (42) is empty"], data=data)


def test_token_cache_of_empty_reviews_is_refused(tmp_path):
    from attnpaper.training.loop import load_tokenizer

    tok = load_tokenizer("bert-tiny-random")
    splits = {s: D.tokenize([""] * 40, np.arange(40) % 2, tok, 16) for s in D.SPLITS}
    path = tmp_path / "blank.npz"
    D.save_token_cache(path, splits, tok, 16)
    with pytest.raises(ValueError, match=r"every review of train, test is empty"):
        check_data(str(path))


def test_degenerate_token_cache_subsample_is_refused(tmp_path):
    from attnpaper.training.loop import load_tokenizer

    tok = load_tokenizer("bert-tiny-random")
    texts, labels = D.synthetic_corpus(64, seed=1)
    splits = {
        "train": D.tokenize(texts, np.ones(64, dtype=np.int64), tok, 16),
        "test": D.tokenize(texts, labels, tok, 16),
    }
    path = tmp_path / "one-class.npz"
    D.save_token_cache(path, splits, tok, 16)
    refused([f"bad parameter data='{path}':", "64 train row(s) all have label 1"], data=str(path))


def test_valid_data_still_loads_as_before(tmp_path):
    from attnpaper.training.loop import load_tokenizer

    data = write_imdb(tmp_path / "imdb", two_class(40))
    check_plan([RunConfig(**{**SMOKE, "data": data})])
    splits = D.load_splits(data, load_tokenizer("bert-tiny-random"), 16)
    assert len(splits["train"]) == 40 and splits["train"].labels.tolist() == [i % 2 for i in range(40)]
    check_plan([RunConfig(**SMOKE)])  # the synthetic smoke corpus passes


def test_hub_data_that_cannot_load_is_refused_before_any_run(monkeypatch):
    """data='hub' offline with no cached copy: one line up front (issue 37), not a ConnectionError in every
    run's notebook; the line names the dataset, the cause and what else is valid."""
    import datasets

    def unreachable(name, *args, **kwargs):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset_builder", unreachable)
    with pytest.raises(ValueError, match=r"data='hub': stanfordnlp/imdb cannot be loaded \(Couldn't reach") as err:
        check_plan([RunConfig(**{**SMOKE, "data": "hub"})])
    assert "a directory of train/test.parquet" in str(err.value) and "\n" not in str(err.value)


def test_a_plan_resolves_each_model_and_data_source_once(tmp_path, monkeypatch):
    """Resolve once, then check (issue 36): four runs of one model on one folder read the folder once and
    resolve the model once; the checks read the resolved plan."""
    from attnpaper.experiment import checks

    data = write_imdb(tmp_path / "imdb", two_class(40))
    calls = {"data": 0, "model": 0}
    read, resolve = D.read_parquet_splits, checks.resolve

    def counted(name, fn):
        def wrapper(*a, **k):
            calls[name] += 1
            return fn(*a, **k)

        return wrapper

    monkeypatch.setattr(D, "read_parquet_splits", counted("data", read))
    monkeypatch.setattr(checks, "resolve", counted("model", resolve))
    configs = [
        RunConfig(**{**SMOKE, "data": data, "variant": v, "seed": s}) for v in ("flash", "linear") for s in (0, 1)
    ]
    plan = checks.resolve_plan(configs)
    assert set(plan.data) == {data} and plan.data[data].labels["train"].tolist() == [i % 2 for i in range(40)]
    assert calls == {"data": 1, "model": 1}
    check_plan(configs)
    assert calls == {"data": 2, "model": 2}  # one more of each: check_plan resolves its own plan once
