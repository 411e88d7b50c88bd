"""RoBERTa, the third model family (attnpaper.model.families): every variant builds from a config or a folder,
the exact ones give stock RobertaForSequenceClassification's logits, packed equals padded with RoBERTa's
positions (numbered from padding_idx + 1), a tiny random RoBERTa trains, and ModernBERT is refused in one line."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch
from transformers import ModernBertConfig, RobertaConfig, RobertaForSequenceClassification

import attnpaper
from attnpaper.experiment.checks import check_plan
from attnpaper.model import families
from attnpaper.training.batches import Collator, chunk_for, forward
from attnpaper.training.config import SMOKE, RunConfig
from attnpaper.training.loop import train
from attnpaper.variants import TABLE, TINY_ROBERTA, VARIANTS

PAD = 1  # RoBERTa's own <pad>, so its positions start at 2
CONFIG = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=514,  # roberta-base's; pad_token_id is RobertaConfig's default, 1
)
SEQS = [[0, 5, 6, 7, 8, 9, 10, 11, 12, 13, 2], [0, 7, 2], [0, *range(20, 38), 2], [0, 2], list(range(3, 19))]
LABELS = [0, 1, 1, 0, 1]
EXACT = [v for v in VARIANTS if TABLE[v].layers in ("builtin", "exact")]  # baseline, sdpa, flash
PACKED = [v for v in VARIANTS if TABLE[v].layout == "packed"]  # flash, linear, hybrid


def options(variant):
    return {"num_features": 16} if "num_features" in TABLE[variant].options else {}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A RoBERTa folder as save_pretrained writes it: a stock classifier with random weights."""
    path = tmp_path_factory.mktemp("roberta")
    torch.manual_seed(1)
    RobertaForSequenceClassification(RobertaConfig(**CONFIG, num_labels=2)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def stock(folder):
    return RobertaForSequenceClassification.from_pretrained(folder).eval()


def padded(seqs=SEQS, labels=LABELS):
    return Collator("padded", pad_id=PAD, max_length=40)(seqs, labels)


def packed(variant):
    return Collator("packed", pad_id=PAD, max_length=40, chunk=chunk_for(variant, "packed", 8))(SEQS, LABELS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_builds_from_a_config_and_a_folder(variant, folder, stock):
    from_config = attnpaper.build_model(RobertaConfig(**CONFIG), variant, **options(variant))
    from_folder = attnpaper.build_model(folder, variant, **options(variant))
    for model in (from_config, from_folder):
        assert type(model).__name__ == "AttnpaperRobertaForSequenceClassification"
        assert model.config.model_type == "attnpaper-roberta" and model.config.attnpaper["variant"] == variant
        assert len(attnpaper.attention_modules(model)) == CONFIG["num_hidden_layers"]
    ours, theirs = dict(from_folder.named_parameters()), dict(stock.named_parameters())
    assert set(theirs) <= set(ours)
    assert all(torch.equal(ours[name], p) for name, p in theirs.items())  # the folder's weights, head included


@pytest.mark.parametrize("variant", EXACT)
def test_exact_variants_give_stock_logits_on_a_padded_batch(variant, folder, stock):
    """fp32 on the CPU: the padded batch through the model, and (flash) the packed one too."""
    b = padded()
    assert (b["input_ids"] == PAD).any()  # a batch with padding, padded with RoBERTa's <pad>
    with torch.no_grad():
        want = stock(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        model = attnpaper.build_model(folder, variant).eval()
        got = [forward(model, b, labels=False)[1]] + (
            [forward(model, packed(variant))[1]] if variant == "flash" else []
        )
    for logits in got:
        assert torch.allclose(logits, want, atol=1e-5), (logits - want).abs().max()


def test_packed_positions_start_after_the_padding_index(folder, stock, monkeypatch):
    """The same model with positions from 0 (BERT's numbering) gives other logits: the offset is what matches."""
    model = attnpaper.build_model(folder, "flash").eval()
    assert families.family_of(model.config).first_position(model.config) == PAD + 1
    with torch.no_grad():
        want = stock(**{k: v for k, v in padded().items() if k != "labels"}).logits
        from_zero = dataclasses.replace(families.FAMILIES["roberta"], first_position=lambda config: 0)
        monkeypatch.setitem(families.FAMILIES, "roberta", from_zero)
        wrong = forward(model, packed("flash"))[1]
    assert not torch.allclose(wrong, want, atol=1e-3)


@pytest.mark.parametrize("variant", PACKED)
def test_packed_equals_padded(variant, folder):
    """Logits, loss and every parameter's gradient (float32): packed against padded, as for BERT and DistilBERT."""
    model = attnpaper.build_model(folder, variant, **options(variant)).eval()
    results = []
    for b in (padded(), packed(variant)):
        model.zero_grad()
        loss, logits = forward(model, b)
        loss.backward()
        results.append((loss.detach(), logits.detach(), [p.grad.clone() for p in model.parameters()]))
    (loss_a, logits_a, grads_a), (loss_b, logits_b, grads_b) = results
    assert torch.allclose(logits_b, logits_a, atol=1e-5) and abs(loss_b - loss_a) < 1e-6
    assert all(torch.allclose(gb, ga, atol=1e-5) for ga, gb in zip(grads_a, grads_b, strict=True))


def test_max_length_leaves_room_for_the_offset():
    """514 position embeddings number 512 tokens from position 2: max_length 513 is refused before the run."""
    conf = RobertaConfig(**CONFIG)
    assert families.family_of(conf).max_length(conf) == 512
    with pytest.raises(ValueError, match="the model has 512 positions"):
        check_plan([RunConfig(**{**SMOKE, "model": TINY_ROBERTA, "max_length": 513})], "cpu")
    from attnpaper.bench.model import model_config  # the benchmark grows the positions for long sequences

    long = model_config(TINY_ROBERTA, 1024)
    assert families.family_of(long).max_length(long) == 1024


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_tiny_random_roberta_trains(variant):
    """A few smoke steps of every variant on roberta-tiny-random, padding-free where the variant is."""
    cfg = RunConfig(**{**SMOKE, "model": TINY_ROBERTA, "variant": variant, "max_steps": 3, "test_samples": 32})
    cfg = check_plan([cfg], "cpu")[0]
    r = train(cfg, device="cpu", progress=False)
    assert r["steps"] == 3 and 0 <= r["accuracy"] <= 1 and all(math.isfinite(x) for x in r["loss_every_50_steps"])
    assert r["layout"] == TABLE[variant].layout and len(r["kernels"]) == 2
    if TABLE[variant].layout == "packed":
        assert all(any("padding-free" in k for k in layer) for layer in r["kernels"]), r["kernels"]


def test_modernbert_is_refused_in_one_line(tmp_path):
    conf = ModernBertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    words = "a modernbert model; attnpaper supports bert, distilbert, roberta encoders"
    with pytest.raises(ValueError, match=words) as err:
        attnpaper.build_model(conf, "flash")
    assert "\n" not in str(err.value)
    conf.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=re.escape(f"bad parameter model='{tmp_path}': {words}") + "$"):
        check_plan([RunConfig(**{**SMOKE, "model": str(tmp_path)})], "cpu")


@pytest.mark.slow  # five papermill runs of the smoke preset: about 4 minutes on 2 CPU cores
def test_smoke_sweep_on_a_tiny_random_roberta(tmp_path):
    """`python -m attnpaper sweep --smoke --set model=roberta-tiny-random`, one seed: every variant learns."""
    from attnpaper.experiment.records import read_record
    from attnpaper.experiment.sweep import sweep

    summary = sweep(list(VARIANTS), [0], tmp_path, smoke=True, overrides={"model": TINY_ROBERTA}, log=lambda *a: None)
    assert [s["status"] for s in summary] == ["ok"] * len(VARIANTS)
    for variant, s in zip(VARIANTS, summary, strict=True):
        rec = read_record(s["record"])
        assert rec["variant"] == variant and rec["model"] == TINY_ROBERTA and rec["layout"] == TABLE[variant].layout
        assert rec["accuracy"] > 0.6, (variant, rec["accuracy"])  # chance: 0.5
