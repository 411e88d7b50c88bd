"""Shared fixtures: tiny models and batches so the suite runs on a CPU in seconds."""
import pytest
import torch
from transformers import BertConfig, DistilBertConfig
from transformers.utils import logging

logging.set_verbosity_error()

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def tiny_bert():
    return BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0)


def tiny_distilbert():
    return DistilBertConfig(vocab_size=100, dim=32, n_layers=4, n_heads=4, hidden_dim=64,
                            max_position_embeddings=64, dropout=0.0)


@pytest.fixture(params=["bert", "distilbert"])
def tiny_config(request):
    return tiny_bert() if request.param == "bert" else tiny_distilbert()


def batch(lengths, n=None, vocab=100, seed=0):
    """input_ids / attention_mask for sequences of the given lengths, right-padded to n."""
    g = torch.Generator().manual_seed(seed)
    n = n or max(lengths)
    ids = torch.randint(5, vocab, (len(lengths), n), generator=g)
    mask = torch.zeros(len(lengths), n, dtype=torch.long)
    for i, L in enumerate(lengths):
        mask[i, :L] = 1
    return {"input_ids": ids * mask, "attention_mask": mask}
