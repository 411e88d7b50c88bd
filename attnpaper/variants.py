"""The package's names that need no heavy import (the command line's help reads them)."""

VARIANTS = ("baseline", "sdpa", "flash", "linear", "hybrid")
"""baseline: eager softmax as DistilBERT computes it; sdpa: transformers' default; flash: exact
fused kernels in every layer; linear: FAVOR+ (or elu+1) in every layer; hybrid: the first k
layers flash, the rest linear."""

OFFLINE_MODEL = "minilm-offline"
RANDOM_DISTILBERT = "distilbert-base-random"
TINY_RANDOM = "bert-tiny-random"
MODEL_ALIASES = (OFFLINE_MODEL, RANDOM_DISTILBERT, TINY_RANDOM)
"""Model names that need no hub: the packaged all-MiniLM-L6-v2, a random DistilBERT-base, and a tiny
random BERT (2 layers, hidden 64) for smoke runs; all use the uncased 30,522-token vocabulary."""
