"""The whole step's 4D masks for transformers' own attention (eager, sdpa): the same results as the [B, N] mask,
and the same kind of mask whether or not a CUDA graph is being captured (transformers drops an all-ones [B, N]
mask except under capture, so a graph's warm-up and its capture would differ)."""

import pytest
import torch
from helpers import cuda, tiny_bert, tiny_distilbert
from transformers import get_scheduler

import attnpaper
from attnpaper.model.auto import encoder_layers
from attnpaper.training.batches import Collator, expanded_mask, forward
from attnpaper.training.step import TrainStep

CONFIGS = [tiny_bert, tiny_distilbert]
VARIANTS = ["sdpa", "baseline"]  # transformers' sdpa and eager attention
PADDED = [[2, 5, 6, 7, 3], [2, 8, 3], [2, *range(9, 19), 3]]
FULL = [[2, 5, 6, 7, 3], [2, 8, 9, 10, 3], [2, 11, 12, 13, 3]]  # one length: an all-ones attention_mask


def batch(seqs):
    return Collator("padded", max_length=16)(seqs, [i % 2 for i in range(len(seqs))])


def model_for(config, variant):
    torch.manual_seed(0)
    return attnpaper.build_model(config(), variant, num_labels=2).eval()


def masks_seen(model):
    """The attention_mask every encoder layer (the whole step's compiled region) is called with, in order."""
    seen = []

    def hook(module, args, kwargs):
        seen.append(kwargs["attention_mask"] if "attention_mask" in kwargs else args[1])

    for layer in encoder_layers(model):
        layer.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def under_capture(monkeypatch, run, capturing):
    """``run()`` while torch (and so transformers' is_tracing) reports a CUDA graph capture in progress, or not."""
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: capturing)
    try:
        return run()
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("seqs", [PADDED, FULL], ids=["padding", "no-padding"])
def test_expanded_mask_gives_the_same_results(config, variant, seqs):
    """The 4D mask (bool for sdpa, additive for eager) holds the [B, N] mask's meaning: the same loss and logits."""
    model, b = model_for(config, variant), batch(seqs)
    with torch.no_grad():
        plain, expanded = forward(model, b), forward(model, b, expand_mask=True)
    assert torch.equal(expanded[1], plain[1])
    assert torch.equal(expanded[0], plain[0])
    mask = expanded_mask(b["attention_mask"], model.config._attn_implementation)
    assert mask.shape == (len(seqs), 1, 1, b["input_ids"].shape[1])
    assert mask.dtype == (torch.bool if variant == "sdpa" else torch.float32)


def test_expanded_mask_refuses_other_implementations():
    with pytest.raises(ValueError, match="eager, sdpa"):
        expanded_mask(torch.ones(2, 4), "attnpaper")


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_layers_get_the_same_mask_in_warm_up_and_capture(config, variant, monkeypatch):
    """With expand_mask the layers get the same tensor mask, capturing or not; with the [B, N] mask transformers
    hands them None in warm-up and a tensor under capture for an all-ones batch (the whole step's recompile inside
    the capture), while a batch with padding gets a tensor both times."""
    model = model_for(config, variant)
    seen = masks_seen(model)

    def layer_masks(b, capturing, expand):
        seen.clear()
        with torch.no_grad():
            under_capture(monkeypatch, lambda: forward(model, b, expand_mask=expand), capturing)
        return list(seen)

    full, padded = batch(FULL), batch(PADDED)
    warm, captured = layer_masks(full, False, True), layer_masks(full, True, True)
    assert len(warm) == len(captured) == len(encoder_layers(model))
    for w, c in zip(warm, captured):
        assert isinstance(w, torch.Tensor) and isinstance(c, torch.Tensor)
        assert w.dtype == c.dtype and torch.equal(w, c)
    # transformers' behaviour the fix works around (5.17 on the H200, 5.24 here):
    assert all(m is None for m in layer_masks(full, False, False))
    assert all(isinstance(m, torch.Tensor) for m in layer_masks(full, True, False))
    for capturing in (False, True):
        assert all(isinstance(m, torch.Tensor) for m in layer_masks(padded, capturing, False))


def make_step(variant, mode, device="cpu", **kw):
    torch.manual_seed(0)
    config = tiny_distilbert()
    config.attention_dropout = config.dropout = 0.0  # a graph and an uncaptured step: the same function
    model = attnpaper.build_model(config, variant, num_labels=2).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    sched = get_scheduler("constant", opt)
    scaler = torch.amp.GradScaler(device, enabled=False)
    if device == "cpu" and mode == "whole":
        kw = dict(backend=None, graph=False, **kw)
    precision = "bf16" if device == "cuda" else "fp32"
    return TrainStep(model, opt, sched, scaler, precision, device, mode, **kw)


@pytest.mark.parametrize(
    ("variant", "mode", "expand"),
    [
        ("sdpa", "whole", True),
        ("baseline", "whole", True),
        ("flash", "whole", False),  # attnpaper's mask function passes the [B, N] mask on, never drops it
        ("sdpa", "eager", False),
        ("baseline", "eager", False),
    ],
)
def test_whole_step_expands_masks_for_transformers_attention(variant, mode, expand):
    assert make_step(variant, mode).expand_mask is expand


def test_whole_step_sdpa_layers_get_the_same_mask_in_warm_up_and_capture(monkeypatch):
    """The step's own forward, an all-ones batch: a tensor mask in warm-up and under capture alike."""
    step = make_step("sdpa", "whole")
    seen = masks_seen(step.model)
    b = batch(FULL)
    for capturing in (False, True):
        with torch.no_grad():
            under_capture(monkeypatch, lambda: step._loss(b), capturing)
    n = len(encoder_layers(step.model))
    assert len(seen) == 2 * n and all(isinstance(m, torch.Tensor) and m.dtype == torch.bool for m in seen)
    assert all(torch.equal(m, seen[0]) for m in seen)


@cuda
@pytest.mark.parametrize("variant", VARIANTS)
def test_gpu_whole_step_records_a_batch_without_padding(variant):
    """The scaling sweep's case (every sequence full length): compiled, recorded and replayed, with no recompile
    inside the capture (transformers' dropped mask made sdpa's fail there at f1312bb), and the same losses as the
    uncaptured step."""
    data = [{k: v.cuda() for k, v in batch(FULL).items()} for _ in range(5)]  # 2 warm-up calls, record, 2 replays
    assert bool(data[0]["attention_mask"].all())
    losses = {}
    for graph in (False, True):
        step = make_step(variant, "whole", "cuda", graph=graph)
        losses[graph] = torch.stack([step(b).detach().float().clone() for b in data])
    assert step.whole.graphs == 1
    assert torch.isfinite(losses[True]).all()
    assert torch.allclose(losses[True], losses[False], atol=1e-2), losses
