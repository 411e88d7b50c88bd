"""Issue 39's accuracy arms: flash with no padding mask (flash_backend='nomask'), and FAVOR+'s default number of
features that the 4x arm multiplies. The campaign's side of the arms is in test_campaign_left.py."""

import pytest
import torch
import torch.nn.functional as F

from attnpaper import build_model, kernels_used
from attnpaper.attention import exact
from attnpaper.model.build import default_num_features_of
from attnpaper.training import batches as P
from attnpaper.training import loop
from attnpaper.training.config import SMOKE, RunConfig
from attnpaper.variants import NOMASK, default_num_features

UNMASKED = dict(variant="flash", layout="padded", flash_backend=NOMASK)


def cls_and_logits(model, batch):
    """The [CLS] rows of the last hidden state (what the head reads) and the logits."""
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    return out.hidden_states[-1][:, 0], out.logits


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_nomask_attends_the_padding_and_equals_sdpa_with_no_mask(tiny_config, make_batch):
    """Padding attended: the [CLS] row moves where a row has padding, not where it has none, and the logits are
    transformers' sdpa with attention_mask=None on the same weights (same seed, same initial weights)."""
    b = make_batch([12, 7, 3], n=12)
    unmasked = build_model(tiny_config, "flash", flash_backend=NOMASK).eval()
    masked = build_model(tiny_config, "flash").eval()
    plain = build_model(tiny_config, "sdpa").eval()
    (cls, got), (cls_masked, want) = cls_and_logits(unmasked, b), cls_and_logits(masked, b)
    assert rel(cls[0], cls_masked[0]) < 1e-5 and torch.allclose(got[0], want[0], atol=1e-6)  # row 0: no padding
    assert min(rel(cls[i], cls_masked[i]) for i in (1, 2)) > 1e-3  # rows 1, 2 attend 5, 9 padded keys
    cls_plain, plain_logits = cls_and_logits(plain, {"input_ids": b["input_ids"]})
    assert rel(cls, cls_plain) < 1e-5 and torch.allclose(got, plain_logits, atol=1e-6)
    assert kernels_used(unmasked) == [["sdpa (cpu)" + exact.UNMASKED]] * len(kernels_used(unmasked))


def test_nomask_is_plain_sdpa_with_no_mask():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 10, 8, generator=g) for _ in range(3))
    key_mask = torch.arange(10)[None] < torch.tensor([[10], [6]])  # row 1: 4 padded keys
    out, name = exact.exact_attention(q, k, v, key_mask, backend=NOMASK)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v).transpose(1, 2), atol=1e-6)
    assert name == "sdpa (cpu), no padding mask (padding attended)"
    masked = exact.exact_attention(q, k, v, key_mask)[0]
    assert torch.allclose(out[0], masked[0], atol=1e-6) and not torch.allclose(out[1], masked[1], atol=1e-3)


@pytest.mark.parametrize(
    "options, words",
    [
        ({"variant": "flash"}, "bad parameter flash_backend='nomask': it attends the padding of padded batches, and "
         "packed ones hold none; valid with it: layout='padded'"),
        ({"variant": "flash", "layout": "packed"}, "valid with it: layout='padded'"),
        ({"variant": "hybrid", "layout": "padded"}, "bad parameter flash_backend='nomask': it is an arm of the flash "
         "variant, not of 'hybrid'; valid: variant='flash', or auto, varlen, flash_attn, sdpa, math"),
        ({"variant": "linear", "layout": "padded"}, "it is an arm of the flash variant, not of 'linear'"),
        ({"variant": "baseline"}, "it is an arm of the flash variant, not of 'baseline'"),
        ({"variant": "sdpa"}, "it is an arm of the flash variant, not of 'sdpa'"),
        ({"variant": "flash", "layout": "padded", "bucket": 64}, "bad parameter bucket=64: flash_backend='nomask' "
         "pads every batch to max_length; valid: None or 128"),
    ],
)  # fmt: skip
def test_nomask_elsewhere_is_refused_in_one_line(options, words):
    with pytest.raises(ValueError) as err:
        RunConfig(**{"flash_backend": NOMASK, **options}).validate()
    assert words in str(err.value) and "\n" not in str(err.value)


def test_nomask_is_recorded_in_the_configuration():
    cfg = RunConfig(**UNMASKED).validate()
    assert RunConfig(**UNMASKED, bucket=128).validate() and cfg.pads_to_max_length()
    assert cfg.model_options()["flash_backend"] == NOMASK
    assert cfg.config_hash() != RunConfig(variant="flash").config_hash()
    assert cfg.config_hash() != RunConfig(variant="flash", layout="padded").config_hash()
    assert not RunConfig(variant="flash", layout="padded").pads_to_max_length()


def test_nomask_models_refuse_hybrids_and_packed_batches(tiny_bert, make_batch):
    with pytest.raises(
        ValueError, match="^bad option flash_backend='nomask': it is an arm of the flash variant, not of 'hy"
    ):
        build_model(tiny_bert, "hybrid", flash_backend=NOMASK)
    model = build_model(tiny_bert, "flash", flash_backend=NOMASK).eval()
    b = make_batch([9, 4])
    seqs = [row[m.bool()].tolist() for row, m in zip(b["input_ids"], b["attention_mask"])]
    packed = P.Collator("packed", max_length=16)(seqs, [0, 1])
    with pytest.raises(ValueError, match="'nomask' attends the padding of padded batches, and a packed batch holds"):
        P.forward(model, packed)


def test_a_nomask_run_pads_training_and_evaluation_to_max_length(monkeypatch):
    """Every batch the model sees, training and evaluation, holds max_length tokens (the padding is part of the
    input), and the record names the unmasked kernel in every layer."""
    widths, real_forward = [], P.forward

    def forward(model, batch, **kw):
        widths.append(batch["input_ids"].shape[1])
        return real_forward(model, batch, **kw)

    monkeypatch.setattr(loop.P, "forward", forward)
    cfg = RunConfig(**{**SMOKE, **UNMASKED, "max_steps": 2, "test_samples": 40, "eval_batch_size": 16})
    r = loop.train(cfg, device="cpu", progress=False)
    assert len(widths) >= 3 and set(widths) == {cfg.max_length}  # the kernel probe's training batch, then evaluation's
    assert r["layout"] == "padded" and r["accuracy"] is not None
    assert r["kernels"] == [["sdpa (cpu)" + exact.UNMASKED]] * 2  # bert-tiny-random's 2 layers
    short = loop.train_collator(cfg, 0, 1)([[5, 6, 7]], [1])  # a training batch of one 3-token review
    assert short["input_ids"].shape == (cfg.batch_size, cfg.max_length)


def test_favor_default_features_are_d_log_d():
    assert default_num_features(32) == 111 and default_num_features(64) == 266
    assert default_num_features_of("minilm-offline") == 111  # heads of 384 / 12 = 32
    assert default_num_features_of("bert-tiny-random") == default_num_features(64 // 4)
    model = build_model("bert-tiny-random", "linear")
    assert {m.num_features for m in model.modules() if hasattr(m, "num_features")} == {default_num_features(16)}


@pytest.mark.cuda
def test_gpu_nomask_runs_flash_attention_in_bf16_and_equals_sdpa_with_no_mask():
    """On an sm80+ GPU in bf16, SDPA with no mask takes its FlashAttention kernel (PyTorch 2.0/2.1's only
    way to flash); the output is unmasked SDPA's, and the kernel's name says the padding is attended."""
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(4, 12, 128, 64, generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    key_mask = torch.arange(128, device="cuda")[None] < torch.tensor([[128], [90], [40], [7]], device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, name = exact.exact_attention(q, k, v, key_mask, backend=NOMASK)
    want = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
    assert torch.allclose(out.float(), want.float(), atol=1e-2), (out - want).abs().max()
    assert name == "sdpa FLASH_ATTENTION (FA2)" + exact.UNMASKED, name  # sm80+, bf16, no mask: FA2


@pytest.mark.cuda
def test_gpu_t4_setup_trains_in_fp16_on_the_memory_efficient_kernel():
    """kernel_set='sm75' on an sm80+ GPU (issue 39: the setup a T4 user had): auto precision is fp16 with a
    gradient scaler, flash's padded layers run SDPA's memory-efficient kernel, and dynamic padding trains."""
    t4 = {"layout": "padded", "padding": "dynamic", "step_mode": "eager", "kernel_set": "sm75"}
    cfg = RunConfig(**{**SMOKE, "variant": "flash", **t4, "max_steps": 4, "test_samples": 40}).validate()
    r = loop.train(cfg, device="cuda", progress=False)
    assert r["precision"] == "fp16" and r["step_mode"] == "eager" and r["accuracy"] is not None
    assert r["kernels"] == [["sdpa EFFICIENT"]] * 2, r["kernels"]  # bert-tiny-random's 2 layers
    assert exact.has_fa2(torch.device("cuda"))  # the block has ended: the GPU's own kernels again
