"""Plain functions for tests that need a configuration at collection time (parametrisation); the fixtures
in conftest.py return the same objects."""

import pytest
from transformers import BertConfig, DistilBertConfig

cuda = pytest.mark.cuda  # skipped, with the reason, on a machine without a CUDA GPU (conftest.py)


def tiny_bert():
    """A 4-layer BERT configuration, 32 wide, without dropout (build_model copies it, never mutates it)."""
    return BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
    )


def tiny_distilbert():
    """The DistilBERT counterpart of tiny_bert."""
    return DistilBertConfig(
        vocab_size=100, dim=32, n_layers=4, n_heads=4, hidden_dim=64, max_position_embeddings=64, dropout=0.0
    )
