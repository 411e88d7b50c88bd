"""Evaluation (training/loop.py): accuracy from eval_batches' logits."""

import torch

from attnpaper.model.build import build_model
from attnpaper.training import loop
from attnpaper.training.config import SMOKE, RunConfig
from attnpaper.training.data import load_splits


def smoke(variant):
    cfg = RunConfig(**{**SMOKE, "variant": variant, "test_samples": 40, "eval_batch_size": 16})
    torch.manual_seed(0)
    tok = loop.load_tokenizer(cfg.model)
    model = build_model(cfg.model, cfg.variant, num_labels=2, **cfg.model_options())
    return cfg, model, load_splits(cfg.data, tok, cfg.max_length, 64, cfg.test_samples)["test"], tok.pad_token_id


def test_accuracy_is_the_share_of_eval_batches_argmax_equal_to_labels():
    """Every review is scored once (dummy rows never count), padded and packed."""
    for variant in ("sdpa", "linear"):  # padded and packed batches
        cfg, model, split, pad = smoke(variant)
        device = torch.device("cpu")
        rows = [(lg.argmax(-1), b["labels"]) for b, lg in loop.eval_batches(model, split, cfg, device, "fp32", pad)]
        scored = sum(int((y != -100).sum()) for _, y in rows)
        correct = sum(int((p == y).sum()) for p, y in rows)
        assert scored == len(split) == 40
        assert loop.evaluate(model, split, cfg, device, "fp32", pad) == correct / 40
