"""Shared fixtures: tiny model configurations and padded batches so the suite runs on a CPU in seconds.

Tests marked ``@pytest.mark.cuda`` are skipped, with the reason, on a machine without a CUDA GPU.
"""

import helpers
import numpy as np
import pytest
import torch
from transformers.utils import logging

logging.set_verbosity_error()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(no_gpu)


@pytest.fixture(name="tiny_bert")
def tiny_bert_fixture():
    """A 4-layer BERT configuration, 32 wide, without dropout (helpers.tiny_bert)."""
    return helpers.tiny_bert()


@pytest.fixture(name="tiny_distilbert")
def tiny_distilbert_fixture():
    """The DistilBERT counterpart of tiny_bert (helpers.tiny_distilbert)."""
    return helpers.tiny_distilbert()


@pytest.fixture(name="tiny_roberta")
def tiny_roberta_fixture():
    """The RoBERTa counterpart of tiny_bert (helpers.tiny_roberta)."""
    return helpers.tiny_roberta()


@pytest.fixture(params=["bert", "distilbert", "roberta"])
def tiny_config(request):
    """tiny_bert, tiny_distilbert, then tiny_roberta: a test that takes it runs once for each model family."""
    return request.getfixturevalue(f"tiny_{request.param}")


def _batch(lengths, n=None, vocab=100, seed=0):
    """input_ids / attention_mask for sequences of the given lengths, right-padded to n (pad id 0)."""
    g = torch.Generator().manual_seed(seed)
    n = n or max(lengths)
    ids = torch.randint(5, vocab, (len(lengths), n), generator=g)
    mask = torch.zeros(len(lengths), n, dtype=torch.long)
    for i, length in enumerate(lengths):
        mask[i, :length] = 1
    return {"input_ids": ids * mask, "attention_mask": mask}


@pytest.fixture
def make_batch():
    """make_batch(lengths, n=None, vocab=100, seed=0): a seeded random batch of those lengths, padded to n."""
    return _batch


@pytest.fixture
def lengths_npy(tmp_path):
    """A .npy of four review lengths (token counts), as `python -m attnpaper bundle` writes IMDb's."""
    path = tmp_path / "lengths.npy"
    np.save(path, np.array([10, 20, 40, 70], dtype=np.int32))
    return str(path)
