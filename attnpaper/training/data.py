"""IMDb (from the hub, local parquet, or a token cache), a synthetic corpus for smoke runs, and batching.

A split is a pair of lists: token ids per review (truncated, unpadded) and labels. Batches are
padded dynamically to their longest member, never to a fixed length unless asked.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SPLITS = ("train", "test")
COLUMNS = ("text", "label")
HUB_NAME = "stanfordnlp/imdb"
DATA_ENV = "ATTNPAPER_IMDB"
SYNTHETIC = "synthetic"


@dataclass
class Split:
    """Tokenised reviews: ids[i] is a list of token ids (already truncated), labels[i] in {0, 1}."""

    ids: list
    labels: np.ndarray

    def __len__(self):
        return len(self.labels)

    def real_tokens(self) -> int:
        return sum(len(x) for x in self.ids)


def default_source() -> str:
    """$ATTNPAPER_IMDB if set, else the Hugging Face Hub."""
    return os.environ.get(DATA_ENV, "hub")


def read_texts(source: str) -> dict:
    """{split: (texts, labels)} from 'hub', 'synthetic' or a directory of train.parquet/test.parquet."""
    if source == SYNTHETIC:
        return {s: synthetic_corpus(2000 if s == "train" else 500, seed=i) for i, s in enumerate(SPLITS)}
    if source == "hub":
        from datasets import load_dataset

        ds = load_dataset(HUB_NAME)
        return {s: (list(ds[s]["text"]), np.asarray(ds[s]["label"])) for s in SPLITS}
    return read_parquet_splits(Path(source))


EMPTY_SHARE = 0.01
"""The share of empty reviews a split may hold before it is refused (IMDb has none)."""
SHARED_SHARE = 0.5
"""The share of test reviews that may also be training reviews before the splits are refused."""


def read_parquet_splits(root: Path) -> dict:
    """{split: (texts, labels)} from a parquet folder, each split checked (``_read_parquet``) and the two
    refused when most test reviews are training reviews too (an evaluation on seen data)."""
    out = {s: _read_parquet(root, s) for s in SPLITS}
    train = set(out["train"][0])
    shared = sum(t in train for t in out["test"][0]) / len(out["test"][0])
    if shared > SHARED_SHARE:
        raise ValueError(
            f"{root}: {shared:.0%} of test.parquet's reviews are also in train.parquet; expected two "
            f"different splits (IMDb's share a handful), at most {SHARED_SHARE:.0%}"
        )
    return out


def _texts(path: Path, column) -> list[str]:
    """The text column as str, or one line naming the file, column and first row that is not UTF-8."""
    try:
        return column.to_pylist()
    except UnicodeDecodeError:
        import pyarrow as pa

        raw = column.cast(pa.binary()).to_pylist()
        row = next(i for i, b in enumerate(raw) if b is not None and not _utf8(b))
        raise ValueError(f"{path}: column text, row {row}, is not valid UTF-8; expected UTF-8 text") from None


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _read_parquet(root: Path, split: str):
    import pyarrow.parquet as pq

    if not root.is_dir():
        raise ValueError(
            f"IMDb data directory {root} does not exist; expected a directory holding "
            f"train.parquet and test.parquet (columns text, label), 'hub', '{SYNTHETIC}' "
            "or a token cache .npz"
        )
    path = root / f"{split}.parquet"
    if not path.exists():
        raise ValueError(f"missing split {split!r}: expected {path} (columns text, label)")
    if not path.is_file():
        raise ValueError(
            f"{path} is a folder, not a parquet file; expected the {split} split as one parquet file "
            "(columns text, label)"
        )
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow's errors name no file
        raise ValueError(f"{path} is not a readable parquet file ({type(err).__name__}: {err})") from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(
            f"{path} lacks column(s) {', '.join(missing)}: expected text (string) and label (0/1); "
            f"found {', '.join(table.column_names)}"
        )
    if table.num_rows == 0:
        raise ValueError(f"{path} has no rows; expected reviews with columns text and label")
    for col in COLUMNS:
        nulls = table.column(col).null_count
        if nulls:
            row = table.column(col).is_null().to_numpy(zero_copy_only=False).nonzero()[0][0]
            raise ValueError(f"{path}: column {col} has {nulls} empty (null) value(s), the first in row {row}")
    texts = table.column("text")
    if str(texts.type) not in ("string", "large_string"):
        raise ValueError(f"{path}: column text must hold strings, found {texts.type}")
    raw = np.asarray(table.column("label").to_numpy())
    found = sorted(set(np.unique(raw).tolist()))
    if not set(found) <= {0, 1}:  # checked before any cast, so 0.9 is not read as 0
        raise ValueError(f"{path}: labels must be 0 or 1, found {found[:5]}")
    if len(found) < 2:
        raise ValueError(f"{path}: every row has label {found[0]}; a classifier needs both labels, 0 and 1")
    texts = _texts(path, texts)
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if len(empty) == len(texts):
        raise ValueError(f"{path}: every review ({len(texts)}) is empty; expected review texts in column text")
    if len(empty) > EMPTY_SHARE * len(texts):
        raise ValueError(
            f"{path}: {len(empty)} of {len(texts)} reviews are empty, the first in row {empty[0]}; "
            f"expected review texts in column text (at most {EMPTY_SHARE:.0%} empty)"
        )
    return texts, raw.astype(np.int64)


def split_labels(source) -> dict | None:
    """{split: labels} of a local source (synthetic, a parquet folder, a token cache), read without the
    texts, for the checks before a run; None for the hub."""
    source = str(source)
    if source == "hub":
        return None
    if source == SYNTHETIC:
        return {s: labels for s, (_, labels) in read_texts(source).items()}
    if source.endswith(".npz"):
        z, _ = load_token_cache_meta(source)
        return {s: z[f"{s}_labels"].astype(np.int64) for s in SPLITS}
    import pyarrow.parquet as pq

    return {
        s: np.asarray(
            pq.read_table(Path(source) / f"{s}.parquet", columns=["label"]).column("label").to_numpy(), dtype=np.int64
        )
        for s in SPLITS
    }


def check_split(source, split, labels, limit=None, batch_size=None) -> None:
    """The rows a run takes from a split (``limit``: train_samples or test_samples) hold both labels and,
    for training, at least one batch; ValueError naming the parameter and what is valid if not."""
    keep = sample_indices(len(labels), limit)
    taken = labels if keep is None else labels[keep]
    name = f"{split}_samples={limit}" if keep is not None else f"data={source!r}"
    rows = f"{len(taken)} {split} row(s)" + (f" of {len(labels)}" if keep is not None else "")
    classes = np.unique(taken).tolist()
    if len(classes) < 2:
        raise ValueError(
            f"bad parameter {name}: the {rows} all have label {classes[0] if classes else None}; "
            "valid: rows of both labels, 0 and 1"
        )
    if batch_size is not None and len(taken) < batch_size:
        raise ValueError(
            f"bad parameter {name}: {rows}, fewer than one batch (batch_size={batch_size}); "
            f"valid: at least {batch_size} rows, or a smaller batch_size"
        )


def sample_indices(total, n, seed=1234) -> np.ndarray | None:
    """Sorted indices of a fixed random subset of n rows (the same for every run); None for all rows."""
    if n is None or n >= total:
        return None
    if n < 1:
        raise ValueError(f"sample limit must be >= 1, got {n}")
    return np.sort(np.random.default_rng(seed).permutation(total)[:n])


def subsample(texts, labels, n, seed=1234):
    """A fixed random subset of n rows (the same for every run); all rows when n is None."""
    keep = sample_indices(len(labels), n, seed)
    if keep is None:
        return texts, labels
    return [texts[i] for i in keep], labels[keep]


def tokenize(texts, labels, tokenizer, max_length) -> Split:
    """Truncate to max_length tokens (with [CLS]/[SEP]); no padding."""
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding=False)
    return Split(enc["input_ids"], np.asarray(labels, dtype=np.int64))


def load_imdb(source):
    """IMDb as a ``datasets.DatasetDict``: the hub's, or local parquet (checked first: clear errors)."""
    from datasets import load_dataset

    if source == "hub":
        return load_dataset(HUB_NAME)
    root = Path(source)
    read_parquet_splits(root)  # schema, rows, nulls, labels, text and overlap, each named with its file
    return load_dataset("parquet", data_files={s: str(root / f"{s}.parquet") for s in SPLITS})


def tokenizer_fingerprint(tokenizer, max_length) -> str:
    """What a tokenised copy depends on: the tokenizer's vocabulary and rules, and max_length."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # truncation/padding are call-time state that the last call left behind
        rules = json.dumps(
            {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")},
            sort_keys=True,
        )
    else:
        rules = json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(f"{rules}|{max_length}".encode()).hexdigest()[:16]


def tokenize_dataset(ds, tokenizer, max_length):
    """A batched ``map`` that truncates to max_length, cached by datasets between runs.

    The cache key is the data's own fingerprint plus the tokenizer's and max_length (an explicit
    fingerprint: hashing a fast tokenizer object is not stable across processes).
    """
    key = f"{ds._fingerprint}|{ds.split}|{tokenizer_fingerprint(tokenizer, max_length)}"  # splits share a folder
    fp = hashlib.sha256(key.encode()).hexdigest()[:16]
    return ds.map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=max_length),
        batched=True,
        remove_columns=["text"],
        new_fingerprint=fp,
        desc=f"tokenising to {max_length} tokens",
    )


def load_splits(source, tokenizer, max_length, train_samples=None, test_samples=None) -> dict:
    """{'train': Split, 'test': Split} from 'hub', a parquet folder, 'synthetic' or a token cache (.npz).

    The hub and parquet go through ``datasets`` (tokenised once per tokenizer and max_length, then
    read from its cache); a token cache is the compact form for offline GPU machines.
    """
    limits = {"train": train_samples, "test": test_samples}
    source = str(source)
    if source.endswith(".npz"):
        key = _cache_key(source, len(tokenizer), max_length, train_samples, test_samples)
        if key is None or key not in _READ:
            cache = load_token_cache(source, tokenizer, max_length)
            out = {}
            for s, sp in cache.items():
                ids, labels = subsample(sp.ids, sp.labels, limits[s])
                out[s] = Split([x if len(x) <= max_length else x[: max_length - 1] + x[-1:] for x in ids], labels)
            _READ.clear()
            if key is None:
                return out
            _READ[key] = out
        return {s: Split(list(sp.ids), sp.labels.copy()) for s, sp in _READ[key].items()}
    if source == SYNTHETIC:
        raw = read_texts(source)
        return {s: tokenize(*subsample(*raw[s], limits[s]), tokenizer, max_length) for s in SPLITS}
    ds = load_imdb(source)
    out = {}
    for s in SPLITS:
        keep = sample_indices(len(ds[s]), limits[s])
        tok = tokenize_dataset(ds[s], tokenizer, max_length)
        tok = tok if keep is None else tok.select(keep)
        rows = tok[:]  # plain lists (a column access alone is lazy)
        out[s] = Split(rows["input_ids"], np.asarray(rows["label"], dtype=np.int64))
    return out


_READ: dict = {}
"""The last token cache load_splits read, as it returned it: the runs of a reused kernel (sweep --reuse-kernel)
read the same file, about a second each on a GPU machine. Its entries are never changed; a caller gets new
lists and label arrays (the reviews' own id lists are shared, read only, as everywhere)."""


def _cache_key(path, vocab_size, *args):
    """What a token cache's reading depends on: the file as it is now (path, size, modification time) and the
    arguments; None where the file cannot be looked at (its reading then says what is wrong)."""
    try:
        path = Path(path).resolve()
        st = path.stat()
    except OSError:
        return None
    return (str(path), st.st_size, st.st_mtime_ns, vocab_size, *args)


def save_token_cache(path, splits: dict, tokenizer, max_length):
    """Write splits as flat uint16 ids + offsets + labels (about 3.3 MB per split at 128 tokens)."""
    arrays = {"meta": np.array(json.dumps({"vocab_size": len(tokenizer), "max_length": max_length}))}
    for s, sp in splits.items():
        arrays[f"{s}_ids"] = np.concatenate([np.asarray(x, dtype=np.uint16) for x in sp.ids])
        arrays[f"{s}_offsets"] = np.cumsum([0] + [len(x) for x in sp.ids]).astype(np.int64)
        arrays[f"{s}_labels"] = sp.labels.astype(np.int8)
    np.savez_compressed(path, **arrays)


def load_token_cache_meta(path):
    """Open a token cache and check it is whole: (the npz, its meta dict); ValueError naming the file if not."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"token cache {path} does not exist; make one with `python -m attnpaper bundle`")
    try:
        z = np.load(path)
        meta = json.loads(str(z["meta"]))
        missing = [f"{s}_{k}" for s in SPLITS for k in ("ids", "offsets", "labels") if f"{s}_{k}" not in z]
        empty = [s for s in SPLITS if not missing and len(z[f"{s}_labels"]) == 0]
        blank = [s for s in SPLITS if not missing and not empty and (np.diff(z[f"{s}_offsets"]) <= 2).all()]
    except Exception as err:
        raise ValueError(
            f"token cache {path} is unreadable ({type(err).__name__}: {err}); "
            "make a new one with `python -m attnpaper bundle`"
        ) from None
    if missing or empty:
        raise ValueError(
            f"token cache {path} lacks {', '.join(missing) or 'rows in ' + ', '.join(empty)}; "
            "make a new one with `python -m attnpaper bundle`"
        )
    if blank:
        raise ValueError(
            f"token cache {path}: every review of {', '.join(blank)} is empty ([CLS] [SEP] only); "
            "make a new one from review texts with `python -m attnpaper bundle`"
        )
    return z, meta


def load_token_cache(path, tokenizer, max_length) -> dict:
    """Read a cache written by save_token_cache, checking it fits this tokenizer and max_length."""
    z, meta = load_token_cache_meta(path)
    if meta["vocab_size"] != len(tokenizer):
        raise ValueError(
            f"token cache {path} was made with a vocabulary of {meta['vocab_size']}, the tokenizer has {len(tokenizer)}"
        )
    if meta["max_length"] < max_length:
        raise ValueError(
            f"token cache {path} holds reviews cut at {meta['max_length']} tokens; "
            f"max_length {max_length} needs a new cache"
        )
    out = {}
    for s in SPLITS:
        flat, off = z[f"{s}_ids"].astype(np.int64), z[f"{s}_offsets"]
        out[s] = Split(
            [flat[off[i] : off[i + 1]].tolist() for i in range(len(off) - 1)], z[f"{s}_labels"].astype(np.int64)
        )
    return out


POSITIVE = "great wonderful moving superb brilliant charming delightful funny touching excellent".split()
NEGATIVE = "awful boring dull terrible weak clumsy tedious bland painful dreadful".split()
FILLER = "the film plot actor scene story movie camera music script director ending cast was and a".split()


def synthetic_corpus(n, seed=0):
    """n short reviews whose label is the majority of sentiment words in them; deterministic in seed."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        main, other = (POSITIVE, NEGATIVE) if label else (NEGATIVE, POSITIVE)
        words = rng.choices(FILLER, k=rng.randint(5, 40)) + rng.choices(main, k=3) + rng.choices(other, k=1)
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, np.asarray(labels)


def batches(split: Split, batch_size, tokenizer, shuffle=False, generator=None, fixed_length=None):
    """Yield {'input_ids', 'attention_mask', 'labels'} padded to the batch's longest (or fixed_length).

    The padding is transformers' ``DataCollatorWithPadding``, as a Trainer user's batches would be.
    """
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(
        tokenizer, padding="max_length" if fixed_length else "longest", max_length=fixed_length, return_tensors="pt"
    )
    order = torch.randperm(len(split), generator=generator).tolist() if shuffle else list(range(len(split)))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield collate(
            [
                {"input_ids": split.ids[i], "attention_mask": [1] * len(split.ids[i]), "labels": int(split.labels[i])}
                for i in idx
            ]
        )
