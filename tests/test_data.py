"""IMDb loading (local parquet), subsampling, tokenising, batching, the token cache and the synthetic corpus."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import attnpaper
from attnpaper.training import data as D


@pytest.fixture
def imdb_dir():
    """$ATTNPAPER_IMDB, the folder holding IMDb's train.parquet and test.parquet (CI sets it)."""
    path = os.environ.get("ATTNPAPER_IMDB")
    if not path:
        pytest.skip("ATTNPAPER_IMDB is unset: point it at a folder holding IMDb's train.parquet and test.parquet")
    return path


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(attnpaper.offline_model_dir()))


def write_split(root, split, **columns):
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), root / f"{split}.parquet")


def write_imdb(root, train_labels=(0, 1, 0), test_labels=(1, 0)):
    write_split(root, "train", text=[f"train {i}" for i in range(len(train_labels))], label=list(train_labels))
    write_split(root, "test", text=[f"test {i}" for i in range(len(test_labels))], label=list(test_labels))
    return root


# --- local parquet -------------------------------------------------------------------------------


def test_read_texts_real_imdb(imdb_dir):
    raw = D.read_texts(imdb_dir)
    assert set(raw) == {"train", "test"}
    for split in D.SPLITS:
        texts, labels = raw[split]
        assert len(texts) == len(labels) == 25_000
        assert set(np.unique(labels)) == {0, 1}
        assert isinstance(texts[0], str) and texts[0]


def test_read_texts_small_dir(tmp_path):
    raw = D.read_texts(str(write_imdb(tmp_path / "imdb")))
    assert raw["train"][0] == ["train 0", "train 1", "train 2"]
    assert raw["train"][1].tolist() == [0, 1, 0]
    assert raw["test"][1].dtype == np.int64


def test_empty_reviews_are_refused_past_one_percent(tmp_path):
    """Half the reviews empty: one line naming the file, the count and the first row (issue 37)."""
    write_split(tmp_path, "train", text=["a fine film", "", "dull", "  "], label=[0, 1, 0, 1])
    write_split(tmp_path, "test", text=["ok", "bad"], label=[1, 0])
    with pytest.raises(ValueError, match=r"train.parquet: 2 of 4 reviews are empty, the first in row 1"):
        D.read_texts(str(tmp_path))


def test_train_identical_to_test_is_refused(tmp_path):
    texts, labels = [f"review {i}" for i in range(10)], [i % 2 for i in range(10)]
    write_split(tmp_path, "train", text=texts, label=labels)
    write_split(tmp_path, "test", text=texts[:6] + ["new 1", "new 2"], label=labels[:8])
    with pytest.raises(ValueError, match=r"75% of test.parquet's reviews are also in train.parquet"):
        D.read_texts(str(tmp_path))
    with pytest.raises(ValueError, match="also in train.parquet"):
        D.load_imdb(str(tmp_path))  # the datasets path is checked the same way, before datasets reads


def test_invalid_utf8_names_the_file_column_and_row(tmp_path):
    raw = pa.array([b"good film", b"bad \xff film", b"fine"], type=pa.binary())
    for split in D.SPLITS:
        pq.write_table(pa.table({"text": raw.view(pa.string()), "label": [0, 1, 0]}), tmp_path / f"{split}.parquet")
    with pytest.raises(ValueError, match=r"train.parquet: column text, row 1, is not valid UTF-8"):
        D.read_texts(str(tmp_path))


def test_missing_directory(tmp_path):
    with pytest.raises(ValueError, match=r"does not exist.*expected a directory.*train\.parquet.*test\.parquet"):
        D.read_texts(str(tmp_path / "nowhere"))


def test_missing_split_file(tmp_path):
    root = tmp_path / "imdb"
    write_split(root, "train", text=["a", "b"], label=[0, 1])
    with pytest.raises(ValueError, match=r"missing split 'test'.*expected .*test\.parquet"):
        D.read_texts(str(root))


def test_wrong_columns(tmp_path):
    root = tmp_path / "imdb"
    write_split(root, "train", review=["a", "b"], sentiment=[0, 1])
    write_split(root, "test", review=["a"], sentiment=[0])
    with pytest.raises(ValueError, match=r"lacks column\(s\) text, label: expected text .* and label") as err:
        D.read_texts(str(root))
    assert "found review, sentiment" in str(err.value)


def test_one_column_missing_is_named(tmp_path):
    root = tmp_path / "imdb"
    write_split(root, "train", text=["a", "b"], stars=[0, 1])
    write_split(root, "test", text=["a"], label=[0])
    with pytest.raises(ValueError, match=r"lacks column\(s\) label: expected"):
        D.read_texts(str(root))


def test_labels_must_be_binary(tmp_path):
    root = write_imdb(tmp_path / "imdb", train_labels=(0, 1, 2))
    with pytest.raises(ValueError, match=r"train\.parquet: labels must be 0 or 1, found") as err:
        D.read_texts(str(root))
    assert "2" in str(err.value).split("found")[1]  # the offending value is shown


def test_fractional_labels_are_refused(tmp_path):
    root = tmp_path / "imdb"
    write_split(root, "train", text=["a", "b", "c"], label=[0.0, 1.0, 0.9])
    write_split(root, "test", text=["a"], label=[0.0])
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        D.read_texts(str(root))


# --- subsample -------------------------------------------------------------------------------------


def test_subsample_is_fixed():
    texts, labels = [f"t{i}" for i in range(100)], np.arange(100) % 2
    a = D.subsample(texts, labels, 10)
    b = D.subsample(texts, labels, 10)
    assert a[0] == b[0] and np.array_equal(a[1], b[1])
    assert len(a[0]) == len(a[1]) == 10
    idx = [int(t[1:]) for t in a[0]]
    assert idx == sorted(idx) and len(set(idx)) == 10  # rows keep their order, no repeats
    assert np.array_equal(a[1], labels[idx])  # texts and labels stay paired
    assert D.subsample(texts, labels, 10, seed=7)[0] != a[0]  # the seed is what fixes it


def test_subsample_none_or_large_keeps_all():
    texts, labels = ["a", "b", "c"], np.array([0, 1, 0])
    for n in (None, 3, 50):
        t, y = D.subsample(texts, labels, n)
        assert t == texts and np.array_equal(y, labels)


@pytest.mark.parametrize("n", [0, -1])
def test_subsample_below_one_raises(n):
    with pytest.raises(ValueError, match="sample limit must be >= 1"):
        D.subsample(["a", "b"], np.array([0, 1]), n)


# --- tokenize and batches --------------------------------------------------------------------------


def test_tokenize_truncates_without_padding(tokenizer):
    texts = ["short one", " ".join(["word"] * 200), "a bit longer than the first one"]
    sp = D.tokenize(texts, [0, 1, 0], tokenizer, max_length=16)
    lengths = [len(x) for x in sp.ids]
    assert lengths[1] == 16  # truncated
    assert lengths[0] < lengths[2] < 16  # not padded
    assert all(x[0] == tokenizer.cls_token_id and x[-1] == tokenizer.sep_token_id for x in sp.ids)
    assert tokenizer.pad_token_id not in sum(sp.ids, [])
    assert sp.labels.tolist() == [0, 1, 0] and sp.labels.dtype == np.int64
    assert sp.real_tokens() == sum(lengths) and len(sp) == 3


def toy_split():
    ids = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10], [11], [12, 13, 14, 15]]
    return D.Split(ids, np.array([0, 1, 0, 1, 1]))


@pytest.fixture(scope="module")
def tok():
    from attnpaper.training.loop import load_tokenizer

    return load_tokenizer("bert-tiny-random")


def test_batches_pad_to_longest_in_batch(tok):
    sp = toy_split()
    out = list(D.batches(sp, 2, tok))
    assert [b["input_ids"].shape for b in out] == [(2, 3), (2, 5), (1, 4)]
    for b, idx in zip(out, [[0, 1], [2, 3], [4]], strict=True):
        lengths = [len(sp.ids[i]) for i in idx]
        assert b["attention_mask"].sum(1).tolist() == lengths
        for row, i in enumerate(idx):
            L = len(sp.ids[i])
            assert b["input_ids"][row, :L].tolist() == sp.ids[i]
            assert (b["input_ids"][row, L:] == tok.pad_token_id).all()
            assert (b["attention_mask"][row, :L] == 1).all() and (b["attention_mask"][row, L:] == 0).all()
        assert b["labels"].tolist() == sp.labels[idx].tolist()


def test_batches_fixed_length_and_pad_id(tok):
    out = list(D.batches(toy_split(), 2, tok, fixed_length=8))
    assert all(b["input_ids"].shape[1] == 8 for b in out)
    assert out[0]["input_ids"][1].tolist() == [4, 5] + [tok.pad_token_id] * 6
    assert out[0]["attention_mask"][1].tolist() == [1, 1] + [0] * 6


def test_batches_shuffle_is_seeded(tok):
    sp = D.Split([[i] * (i % 4 + 1) for i in range(40)], np.arange(40) % 2)

    def order(seed):
        return [
            x
            for b in D.batches(sp, 8, tok, shuffle=True, generator=torch.Generator().manual_seed(seed))
            for x in b["input_ids"][:, 0].tolist()
        ]

    assert order(3) == order(3)
    assert sorted(order(3)) == list(range(40))  # a permutation: every row once
    assert order(3) != list(range(40)) and order(3) != order(4)
    assert [b["input_ids"][:, 0].tolist() for b in D.batches(sp, 40, tok)][0] == list(range(40))  # no shuffle: in order


# --- token cache -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cached(tokenizer, tmp_path_factory):
    """Synthetic splits tokenised at 64 tokens (some longer reviews, so truncation shows) and their cache."""
    raw = {s: D.synthetic_corpus(30, seed=i) for i, s in enumerate(D.SPLITS)}
    raw["train"][0][0] = " ".join(["great"] * 100)  # longer than 64 tokens
    splits = {s: D.tokenize(*raw[s], tokenizer, 64) for s in D.SPLITS}
    path = tmp_path_factory.mktemp("cache") / "imdb-64.npz"
    D.save_token_cache(path, splits, tokenizer, 64)
    return path, splits


def test_token_cache_round_trip(tokenizer, cached):
    path, splits = cached
    loaded = D.load_splits(str(path), tokenizer, 64)
    for s in D.SPLITS:
        assert loaded[s].ids == splits[s].ids
        assert np.array_equal(loaded[s].labels, splits[s].labels) and loaded[s].labels.dtype == np.int64
    assert max(len(x) for x in loaded["train"].ids) == 64


def test_token_cache_subsample_matches_text_path(tokenizer, cached):
    path, splits = cached
    loaded = D.load_splits(str(path), tokenizer, 64, train_samples=7, test_samples=5)
    assert len(loaded["train"]) == 7 and len(loaded["test"]) == 5
    ids, labels = D.subsample(splits["train"].ids, splits["train"].labels, 7)
    assert loaded["train"].ids == ids and np.array_equal(loaded["train"].labels, labels)


def test_token_cache_refuses_longer_max_length(tokenizer, cached):
    with pytest.raises(ValueError, match=r"cut at 64 tokens; max_length 128 needs a new cache"):
        D.load_splits(str(cached[0]), tokenizer, 128)


def test_token_cache_shorter_max_length_keeps_sep(tokenizer, cached):
    path, splits = cached
    short = D.load_splits(str(path), tokenizer, 16)
    n_cut = 0
    for full, cut in zip(splits["train"].ids + splits["test"].ids, short["train"].ids + short["test"].ids, strict=True):
        if len(full) <= 16:
            assert cut == full
        else:
            n_cut += 1
            assert len(cut) == 16
            assert cut[:15] == full[:15] and cut[-1] == tokenizer.sep_token_id
    assert n_cut > 0
    # the same as tokenising the text at 16 tokens directly
    raw = D.synthetic_corpus(30, seed=1)
    assert short["test"].ids == D.tokenize(*raw, tokenizer, 16).ids


def test_token_cache_refuses_other_vocabulary(cached):
    class OtherVocab:
        def __len__(self):
            return 50_257

    with pytest.raises(ValueError, match=r"vocabulary of 30522, the tokenizer has 50257"):
        D.load_splits(str(cached[0]), OtherVocab(), 64)


def test_token_cache_is_read_once_per_file_state(tokenizer, cached, tmp_path, monkeypatch):
    """A second load_splits of the same cache, arguments and file state (a reused kernel's next run) does not
    read the file again, and gets the same splits in lists of its own; a rewritten file is read anew."""
    path = tmp_path / "copy.npz"
    path.write_bytes(cached[0].read_bytes())
    reads = []
    real = D.load_token_cache
    monkeypatch.setattr(D, "load_token_cache", lambda *a: reads.append(a) or real(*a))
    first = D.load_splits(str(path), tokenizer, 64, train_samples=7)
    first["train"].ids.append([1, 2])  # a caller's own list
    again = D.load_splits(str(path), tokenizer, 64, train_samples=7)
    want = D.subsample(cached[1]["train"].ids, cached[1]["train"].labels, 7)
    assert len(reads) == 1 and again["train"].ids == want[0] and np.array_equal(again["train"].labels, want[1])
    D.load_splits(str(path), tokenizer, 64, train_samples=6)  # other arguments: read
    assert len(reads) == 2
    splits = {s: D.Split(sp.ids[:5], sp.labels[:5]) for s, sp in cached[1].items()}
    D.save_token_cache(path, splits, tokenizer, 64)  # another file under the same name: read
    assert len(D.load_splits(str(path), tokenizer, 64)["test"]) == 5 and len(reads) == 3


def test_token_cache_missing_file(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="token cache .* does not exist"):
        D.load_splits(str(tmp_path / "none.npz"), tokenizer, 64)


# --- synthetic corpus --------------------------------------------------------------------------------


def test_synthetic_corpus_deterministic_and_balanced():
    t1, y1 = D.synthetic_corpus(101, seed=5)
    t2, y2 = D.synthetic_corpus(101, seed=5)
    assert t1 == t2 and np.array_equal(y1, y2)
    assert D.synthetic_corpus(101, seed=6)[0] != t1
    assert len(t1) == 101 and set(y1.tolist()) == {0, 1}
    assert abs(int(y1.sum()) - (101 - int(y1.sum()))) <= 1
    texts, labels = D.synthetic_corpus(200)
    assert np.bincount(labels).tolist() == [100, 100]


def test_synthetic_labels_follow_sentiment_words():
    texts, labels = D.synthetic_corpus(200, seed=1)
    for text, label in zip(texts, labels, strict=True):
        words = text.split()
        pos = sum(w in D.POSITIVE for w in words)
        neg = sum(w in D.NEGATIVE for w in words)
        assert (pos > neg) == bool(label)


def test_read_texts_synthetic_source():
    raw = D.read_texts(D.SYNTHETIC)
    assert len(raw["train"][0]) == 2000 and len(raw["test"][0]) == 500
    assert raw["train"][0][:5] != raw["test"][0][:5]  # the two splits use different seeds
