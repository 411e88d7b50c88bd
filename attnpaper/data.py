"""IMDb (from the hub, local parquet, or a token cache), a synthetic corpus for smoke runs, and batching.

A split is a pair of lists: token ids per review (truncated, unpadded) and labels. Batches are
padded dynamically to their longest member, never to a fixed length unless asked.
"""
from __future__ import annotations

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
    return {s: _read_parquet(Path(source), s) for s in SPLITS}


def _read_parquet(root: Path, split: str):
    import pyarrow.parquet as pq

    if not root.is_dir():
        raise ValueError(f"IMDb data directory {root} does not exist; expected a directory holding "
                         f"train.parquet and test.parquet (columns text, label), 'hub', '{SYNTHETIC}' "
                         "or a token cache .npz")
    path = root / f"{split}.parquet"
    if not path.exists():
        raise ValueError(f"missing split {split!r}: expected {path} (columns text, label)")
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow's errors name no file
        raise ValueError(f"{path} is not a readable parquet file ({type(err).__name__}: {err})") from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path} lacks column(s) {', '.join(missing)}: expected text (string) and label (0/1); "
                         f"found {', '.join(table.column_names)}")
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
    labels = raw.astype(np.int64)
    return texts.to_pylist(), labels


def subsample(texts, labels, n, seed=1234):
    """A fixed random subset of n rows (the same for every run); all rows when n is None."""
    if n is None or n >= len(labels):
        return texts, labels
    if n < 1:
        raise ValueError(f"sample limit must be >= 1, got {n}")
    keep = np.sort(np.random.default_rng(seed).permutation(len(labels))[:n])
    return [texts[i] for i in keep], labels[keep]


def tokenize(texts, labels, tokenizer, max_length) -> Split:
    """Truncate to max_length tokens (with [CLS]/[SEP]); no padding."""
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding=False)
    return Split(enc["input_ids"], np.asarray(labels, dtype=np.int64))


def load_splits(source, tokenizer, max_length, train_samples=None, test_samples=None) -> dict:
    """{'train': Split, 'test': Split} from a source (see read_texts) or a token cache (.npz)."""
    limits = {"train": train_samples, "test": test_samples}
    if str(source).endswith(".npz"):
        cache = load_token_cache(source, tokenizer, max_length)
        out = {}
        for s, sp in cache.items():
            ids, labels = subsample(sp.ids, sp.labels, limits[s])
            out[s] = Split([x if len(x) <= max_length else x[: max_length - 1] + x[-1:] for x in ids], labels)
        return out
    raw = read_texts(source)
    return {s: tokenize(*subsample(*raw[s], limits[s]), tokenizer, max_length) for s in SPLITS}


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
    except Exception as err:
        raise ValueError(f"token cache {path} is unreadable ({type(err).__name__}: {err}); "
                         "make a new one with `python -m attnpaper bundle`") from None
    if missing or empty:
        raise ValueError(f"token cache {path} lacks {', '.join(missing) or 'rows in ' + ', '.join(empty)}; "
                         "make a new one with `python -m attnpaper bundle`")
    return z, meta


def load_token_cache(path, tokenizer, max_length) -> dict:
    """Read a cache written by save_token_cache, checking it fits this tokenizer and max_length."""
    z, meta = load_token_cache_meta(path)
    if meta["vocab_size"] != len(tokenizer):
        raise ValueError(f"token cache {path} was made with a vocabulary of {meta['vocab_size']}, "
                         f"the tokenizer has {len(tokenizer)}")
    if meta["max_length"] < max_length:
        raise ValueError(f"token cache {path} holds reviews cut at {meta['max_length']} tokens; "
                         f"max_length {max_length} needs a new cache")
    out = {}
    for s in SPLITS:
        flat, off = z[f"{s}_ids"].astype(np.int64), z[f"{s}_offsets"]
        out[s] = Split([flat[off[i]:off[i + 1]].tolist() for i in range(len(off) - 1)],
                       z[f"{s}_labels"].astype(np.int64))
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


def batches(split: Split, batch_size, pad_id=0, shuffle=False, generator=None, fixed_length=None):
    """Yield {'input_ids', 'attention_mask', 'labels'} padded to the batch's longest (or fixed_length)."""
    order = torch.randperm(len(split), generator=generator).tolist() if shuffle else range(len(split))
    order = list(order)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        seqs = [split.ids[i] for i in idx]
        n = fixed_length or max(len(x) for x in seqs)
        ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), n), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, : len(seq)] = torch.as_tensor(seq)
            mask[row, : len(seq)] = 1
        yield {"input_ids": ids, "attention_mask": mask, "labels": torch.as_tensor(split.labels[idx])}
